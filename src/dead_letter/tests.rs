use super::list::write_table;
use super::*;
use crate::database::Database;

#[tokio::test]
async fn a_letter_stored_again_keeps_its_first_payload_and_adds_the_attempts() {
    let cluster = leadhook_testkit::cluster::Cluster::start(Default::default()).expect("a cluster");
    let db = Database::from_url(&format!("{}?sslmode=disable", cluster.url("postgres"))).unwrap();
    let sql = db.sql().await.unwrap();
    sql.batch_execute(&crate::setup::objects::dead_letter_statements("leadhook"))
        .await
        .unwrap();
    let store = DeadLetterStore::new(db, "leadhook");
    let letter = |payload: &'static str, attempts| DeadLetter {
        webhook: "crm".into(),
        webhook_id: "6b8f3a21-0/16B3748-2e7c1f3a9b2c8-0".into(),
        payload: Bytes::from_static(payload.as_bytes()),
        attempts,
        last_status: Some(500),
        last_error: "HTTP 500".into(),
        first_attempt: SystemTime::now(),
        last_attempt: SystemTime::now(),
    };
    store
        .store(&letter(r#"{"data":{"notes":"first"}}"#, 3))
        .await;
    store
        .store(&letter(r#"{"data":{"notes":"read back later"}}"#, 2))
        .await;
    let row = sql
        .query_one("SELECT payload, attempts FROM leadhook.dead_letters", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), r#"{"data":{"notes":"first"}}"#);
    assert_eq!(row.get::<_, i32>(1), 5);
}

#[test]
fn tables_are_aligned_for_reading() {
    let mut out = Vec::new();
    let rows = vec![
        vec!["1".to_owned(), "long webhook name".to_owned()],
        vec!["22".to_owned(), "b".to_owned()],
    ];
    write_table(&mut out, &["ID", "WEBHOOK"], &rows).unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "ID  WEBHOOK\n1   long webhook name\n22  b\n"
    );
}
