//! A partitioned leads table: every partition's inserts and updates, rows
//! moving between partitions, and partitions created later, in both modes.

use crate::support::*;

/// The leads table, partitioned by region (the key must include it).
const PARTITIONED_LEADS: &str = "DROP TABLE leads;
CREATE TABLE leads (
    id bigserial, region text NOT NULL,
    email text, company text, first_name text, last_name text, phone text,
    website text, position text, twitter text, linkedin text, notes text,
    score integer,
    PRIMARY KEY (id, region)
) PARTITION BY LIST (region);
CREATE TABLE leads_eu PARTITION OF leads FOR VALUES IN ('eu');
CREATE TABLE leads_us PARTITION OF leads FOR VALUES IN ('us');
CREATE TABLE leads_other PARTITION OF leads DEFAULT;";

/// Saves leads scored 1 to 6: one in each partition, an update, a row
/// moved to another partition, and one in a partition created after the
/// sidecar started.
async fn save_leads_across_partitions(db: &TestDb) {
    db.sql
        .batch_execute(
            "INSERT INTO leads (region, email, score) VALUES ('eu', 'a@eu', 1);
             INSERT INTO leads (region, email, score) VALUES ('us', 'b@us', 2);
             INSERT INTO leads (region, email, score) VALUES ('apac', 'c@apac', 3);
             UPDATE leads SET score = 4 WHERE email = 'a@eu';
             UPDATE leads SET region = 'eu', score = 5 WHERE email = 'b@us';
             CREATE TABLE leads_latam PARTITION OF leads FOR VALUES IN ('latam');
             INSERT INTO leads (region, email, score) VALUES ('latam', 'd@latam', 6);",
        )
        .await
        .expect("save leads");
    let moved: String = db
        .sql
        .query_one(
            "SELECT tableoid::regclass::text FROM leads WHERE email = 'b@us'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        moved, "leads_eu",
        "the update moved the row to another partition"
    );
}

#[tokio::test]
async fn every_partition_of_a_partitioned_table_is_delivered_including_rows_that_move() {
    let Running {
        db,
        receiver,
        sidecar,
        ..
    } = Scenario::new("partitioned")
        .setup(PARTITIONED_LEADS)
        .start(&leadhook())
        .await;
    save_leads_across_partitions(&db).await;
    let got = wait_for_scores(&receiver, "/leads", 6, &sidecar).await;
    let moved = got.iter().find(|r| data(r)["score"] == 5).unwrap();
    assert_eq!(data(moved)["email"], "b@us");
    let via_root: bool = db
        .sql
        .query_one(
            "SELECT pubviaroot FROM pg_publication WHERE pubname = $1",
            &[&db.name],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        via_root,
        "the publication was created to publish via the root"
    );
}

#[tokio::test]
async fn check_fails_on_a_publication_that_publishes_partitions_under_their_own_names() {
    let db = TestDb::create(shared_cluster(), "partpub").await;
    db.sql.batch_execute(PARTITIONED_LEADS).await.unwrap();
    db.sql
        .batch_execute(&format!("CREATE PUBLICATION {} FOR TABLE leads", db.name))
        .await
        .unwrap();
    let check = || leadhook().run(&db.config().to_toml(), &["check"], &[]);
    let Finished {
        code, stdout: out, ..
    } = check();
    assert_eq!(code, Some(1), "{out}");
    let fix = format!(
        "ALTER PUBLICATION \"{}\" SET (publish_via_partition_root = true);",
        db.name
    );
    assert!(out.contains(&fix), "{out}");
    db.sql.batch_execute(&fix.replace('"', "")).await.unwrap();
    let Finished {
        code, stdout: out, ..
    } = check();
    assert_eq!(code, Some(0), "{out}");
}

#[tokio::test]
async fn notify_mode_captures_every_partition_present_and_future() {
    let Running {
        db,
        receiver,
        sidecar,
        ..
    } = Scenario::new("partnotify")
        .notify()
        .setup(PARTITIONED_LEADS)
        .start(&leadhook())
        .await;
    save_leads_across_partitions(&db).await;
    let got = wait_for_scores(&receiver, "/leads", 6, &sidecar).await;
    let moved = got.iter().find(|r| data(r)["score"] == 5).unwrap();
    assert_eq!(data(moved)["email"], "b@us");
}
