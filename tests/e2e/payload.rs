//! The `save_lead` payload contract, field by field.

use crate::support::*;

#[tokio::test]
async fn payload_has_exactly_the_documented_shape_with_nulls_by_field_type() {
    let Running {
        db,
        receiver,
        sidecar: _sidecar,
        ..
    } = Scenario::new("payload_nulls").start(&leadhook()).await;

    db.sql
        .batch_execute("INSERT INTO leads (email) VALUES (NULL)")
        .await
        .unwrap();
    let got = receiver.wait_for("/leads", 1, WAIT).await.unwrap();
    assert_eq!(
        std::str::from_utf8(&got[0].body).unwrap(),
        r#"{"data":{"email":"","company":null,"first_name":null,"last_name":null,"phone":null,"website":"","position":null,"twitter":null,"linkedin":null,"notes":null,"score":0}}"#
    );
    assert_eq!(got[0].header("content-type"), Some("application/json"));
    assert_eq!(got[0].method, "POST");
}

#[tokio::test]
async fn text_arrives_byte_exact_and_score_as_an_integer() {
    let Running {
        db,
        receiver,
        sidecar: _sidecar,
        ..
    } = Scenario::new("payload_text").start(&leadhook()).await;

    let tricky = "Zoë \"the\" O'Brien \\ back\\slash\nnew line\ttab ✓ 🚀 \u{1}";
    let long = "x".repeat(100_000);
    db.sql
        .execute(
            "INSERT INTO leads (email, company, first_name, last_name, phone, website, position, twitter, linkedin, notes, score)
             VALUES ($1, $1, $1, $1, $1, $1, $1, $1, $1, $2, -2147483648)",
            &[&tricky, &long],
        )
        .await
        .unwrap();
    let got = receiver.wait_for("/leads", 1, WAIT).await.unwrap();
    let lead = data(&got[0]);
    for field in [
        "email",
        "company",
        "first_name",
        "last_name",
        "phone",
        "website",
        "position",
        "twitter",
        "linkedin",
    ] {
        assert_eq!(lead[field], tricky, "{field}");
    }
    assert_eq!(lead["notes"].as_str().map(str::len), Some(100_000));
    assert_eq!(lead["score"], -2_147_483_648i64);
    assert_eq!(lead.as_object().unwrap().len(), 11);
}

/// A 200 KB random `notes` is stored out of line (TOAST); an UPDATE that does
/// not touch it streams it as "unchanged", and the sidecar must still send it.
async fn untouched_large_notes_are_delivered(identity_full: bool) {
    let scenario = if identity_full {
        Scenario::new("toast_full").setup("ALTER TABLE leads REPLICA IDENTITY FULL")
    } else {
        Scenario::new("toast_default")
    };
    let Running {
        db,
        receiver,
        sidecar: _sidecar,
        ..
    } = scenario.start(&leadhook()).await;

    db.sql
        .batch_execute(
            "INSERT INTO leads (email, notes, score)
             SELECT 'big@example.com', string_agg(md5(random()::text), ''), 1 FROM generate_series(1, 6400)",
        )
        .await
        .unwrap();
    db.sql
        .batch_execute("UPDATE leads SET score = 2 WHERE email = 'big@example.com'")
        .await
        .unwrap();
    let notes: String = db
        .sql
        .query_one("SELECT notes FROM leads", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(notes.len(), 204_800);

    let got = receiver.wait_for("/leads", 2, WAIT).await.unwrap();
    let (insert, update) = (data(&got[0]), data(&got[1]));
    assert_eq!(insert["notes"], notes.as_str());
    assert_eq!(update["score"], 2);
    assert_eq!(
        update["notes"],
        notes.as_str(),
        "the untouched notes must arrive complete"
    );
}

#[tokio::test]
async fn update_keeps_untouched_large_notes_by_reading_them_back() {
    untouched_large_notes_are_delivered(false).await;
}

#[tokio::test]
async fn update_keeps_untouched_large_notes_with_replica_identity_full() {
    untouched_large_notes_are_delivered(true).await;
}

#[tokio::test]
async fn columns_can_be_renamed_and_declared_absent() {
    let Running {
        db,
        receiver,
        sidecar: _sidecar,
        ..
    } = Scenario::new("payload_columns")
        .setup(
            "CREATE TABLE contacts (pk int PRIMARY KEY, mail text, points smallint, company text, first_name text,
             last_name text, phone text, website text, position text, linkedin text, notes text)",
        )
        .configure(|c| {
            c.source.table = Some("public.contacts".into());
            let columns = &mut c.source.columns;
            columns.insert("email".into(), Column::Named("mail".into()));
            columns.insert("score".into(), Column::Named("points".into()));
            columns.insert("twitter".into(), Column::Absent(false));
        })
        .start(&leadhook())
        .await;

    db.sql
        .batch_execute("INSERT INTO contacts (pk, mail, points) VALUES (1, 'm@example.com', 7)")
        .await
        .unwrap();
    let got = receiver.wait_for("/leads", 1, WAIT).await.unwrap();
    let lead = data(&got[0]);
    assert_eq!(lead["email"], "m@example.com");
    assert_eq!(lead["score"], 7);
    assert_eq!(lead["twitter"], serde_json::Value::Null);
}

/// Large random notes, stored out of line.
const BIG_NOTES: &str =
    "(SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 1000))";

#[tokio::test]
async fn read_back_large_values_are_counted_as_exact_newer_or_deleted() {
    let Running {
        db,
        receiver,
        sidecar,
        ..
    } = Scenario::new("toast_reads").start(&leadhook()).await;
    commit_each(
        &db,
        &[
            &format!("INSERT INTO leads (id, email, notes, score) VALUES (1, 'a@example.com', {BIG_NOTES}, 1)"),
            "UPDATE leads SET score = 2 WHERE id = 1",
        ],
    )
    .await;
    let got = wait_for_scores(&receiver, "/leads", 2, &sidecar).await;
    let notes: String = db
        .sql
        .query_one("SELECT notes FROM leads WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0);
    let update = got.iter().find(|r| data(r)["score"] == 2).unwrap();
    assert_eq!(data(update)["notes"], notes.as_str());
    let admin = sidecar.admin_url().await;
    let reads = |result| metric_owned(admin.clone(), result);
    assert_eq!(
        reads("exact").await,
        1.0,
        "read back while nothing changed it"
    );

    // Changes made while the sidecar is stopped are read back later: the
    // row has changed again (newer) or is gone (deleted).
    sidecar.terminate();
    assert!(sidecar.wait_exit(WAIT).await.success());
    commit_each(
        &db,
        &[
            "UPDATE leads SET score = 3 WHERE id = 1",
            "UPDATE leads SET notes = 'rewritten', score = 4 WHERE id = 1",
            &format!("INSERT INTO leads (id, email, notes, score) VALUES (2, 'b@example.com', {BIG_NOTES}, 10)"),
            "UPDATE leads SET score = 11 WHERE id = 2",
            "DELETE FROM leads WHERE id = 2",
        ],
    )
    .await;
    sidecar.restart();
    let got = wait_for_these_scores(&receiver, "/leads", [3, 4, 10, 11], &sidecar).await;
    let by_score = |score: i64| data(got.iter().find(|r| data(r)["score"] == score).unwrap());
    assert_eq!(
        by_score(3)["notes"],
        "rewritten",
        "read back, the value is the row's current one, newer than the change"
    );
    assert_eq!(by_score(11)["notes"], serde_json::Value::Null);
    let admin = sidecar.admin_url().await;
    let reads = |result| metric_owned(admin.clone(), result);
    assert_eq!(reads("newer").await, 1.0);
    assert_eq!(reads("deleted").await, 1.0);
    assert_eq!(reads("exact").await, 0.0);
}

async fn metric_owned(admin: String, result: &'static str) -> f64 {
    metric(&admin, "leadhook_toast_reads_total", &[("result", result)]).await
}

/// Each statement in a transaction of its own (a large value an UPDATE
/// leaves untouched in the transaction that wrote it is sent whole).
async fn commit_each(db: &TestDb, statements: &[&str]) {
    for statement in statements {
        db.sql.execute(*statement, &[]).await.expect(statement);
    }
}
