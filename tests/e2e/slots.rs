//! The slot's life: created while transactions are open, dropped by a DBA
//! while leadhook runs, and while it is stopped.

use std::cell::RefCell;
use std::time::Duration;

use crate::support::*;

/// What a DBA does: end the walsender that holds the slot, then drop it.
async fn drop_slot(db: &TestDb) {
    let failure = RefCell::new(String::new());
    eventually(
        "cannot drop the slot",
        || failure.borrow().clone(),
        async || {
            db.sql
                .execute(
                    "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL",
                    &[&db.name],
                )
                .await
                .expect("terminate walsender");
            let dropped = db
                .sql
                .execute("SELECT pg_drop_replication_slot($1)", &[&db.name])
                .await;
            *failure.borrow_mut() = format!("{dropped:?}");
            dropped.is_ok()
        },
    )
    .await;
}

/// The `key=value` field of the log line that contains `line`.
fn field<'a>(log: &'a str, line: &str, key: &str) -> &'a str {
    let line = log.lines().find(|l| l.contains(line)).expect("the line");
    let at = line.find(&format!("{key}=")).expect("the field") + key.len() + 1;
    line[at..].split_whitespace().next().expect("a value")
}

#[tokio::test]
async fn a_slot_dropped_while_the_sidecar_runs_is_reported_counted_and_recreated() {
    let Running {
        db,
        receiver,
        sidecar,
        ..
    } = Scenario::new("dropped").start(&leadhook()).await;
    db.insert_leads(1..=1).await;
    wait_for_scores(&receiver, "/leads", 1, &sidecar).await;

    drop_slot(&db).await;
    sidecar.wait_log("DATA LOSS").await;
    db.wait_streaming(&sidecar).await;
    db.insert_leads(2..=2).await;
    wait_for_scores(&receiver, "/leads", 2, &sidecar).await;
    let admin = sidecar.admin_url().await;
    assert_eq!(
        metric(&admin, "leadhook_slot_recreated_total", &[]).await,
        1.0
    );
    assert!(sidecar.log().contains(&format!("slot {:?}", db.name)));
}

#[tokio::test]
async fn a_slot_dropped_while_the_sidecar_was_stopped_is_reported_with_the_range_lost() {
    let Running {
        db,
        receiver,
        sidecar,
        ..
    } = Scenario::new("dropstop").start(&leadhook()).await;
    db.insert_leads(1..=1).await;
    wait_for_scores(&receiver, "/leads", 1, &sidecar).await;
    sidecar.terminate();
    assert!(sidecar.wait_exit(WAIT).await.success());

    drop_slot(&db).await;
    db.insert_leads(2..=2).await; // committed while no slot existed: lost
    let gap = db.insert_lsn().await;
    sidecar.restart();
    sidecar.wait_log("DATA LOSS").await;
    db.wait_streaming(&sidecar).await;
    db.insert_leads(3..=3).await;
    let got = wait_for_these_scores(&receiver, "/leads", [3], &sidecar).await;
    assert!(
        !scores_of(&got).contains(&2),
        "a lead committed while there was no slot cannot have been decoded"
    );

    let log = sidecar.log();
    let (from, to) = (
        field(&log, "DATA LOSS", "lost_from"),
        field(&log, "DATA LOSS", "lost_to"),
    );
    let within: bool = db
        .sql
        .query_one(
            "SELECT $1::text::pg_lsn < $2::text::pg_lsn AND $2::text::pg_lsn <= $3::text::pg_lsn",
            &[&from, &gap, &to],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        within,
        "the lost lead ({gap}) lies in the range reported ({from} to {to}):\n{log}"
    );
    let admin = sidecar.admin_url().await;
    assert_eq!(
        metric(&admin, "leadhook_slot_recreated_total", &[]).await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_the_slot_behind_an_open_transaction_is_reported_and_keeps_the_sidecar_unready() {
    // A cluster of its own: the open transaction holds up every slot
    // creation in the cluster.
    let cluster = start_cluster(ClusterOptions::default());
    let db = TestDb::create(&cluster, "slotwait").await;
    let blocker = connect(&db.url).await;
    let pid: i32 = blocker
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    blocker
        .batch_execute("BEGIN; SELECT txid_current();")
        .await
        .unwrap();
    // Not a Scenario: the sidecar cannot stream until the transaction ends.
    let receiver = Receiver::start(0).await.unwrap();
    let config = db
        .config()
        .webhook(Webhook::to(&receiver, "hook", "/leads"));
    let sidecar = leadhook().start(&config.to_toml());
    sidecar
        .wait_log_within(
            "creating the replication slot is waiting",
            Duration::from_secs(45),
        )
        .await;
    assert!(
        sidecar
            .log()
            .contains(&format!("pid {pid} (idle in transaction")),
        "the blocking session is named:\n{}",
        sidecar.log()
    );
    install_crypto_provider();
    let admin = sidecar.admin_url().await;
    let ready = reqwest::get(format!("{admin}/readyz")).await.unwrap();
    assert_eq!(ready.status().as_u16(), 503);
    let reason = ready.text().await.unwrap();
    assert!(reason.contains("creating replication slot"), "{reason}");

    blocker.batch_execute("COMMIT").await.unwrap();
    db.wait_streaming(&sidecar).await;
    db.insert_leads(1..=1).await;
    wait_for_scores(&receiver, "/leads", 1, &sidecar).await;
    assert!(sidecar.log().contains("created replication slot"));
}

/// About `mb` MiB of WAL from another table (rows of 1 kB).
async fn fill_wal(db: &TestDb, mb: i32) {
    db.sql
        .execute(
            "INSERT INTO filler SELECT repeat('x', 1000) FROM generate_series(1, $1::int * 1000)",
            &[&mb],
        )
        .await
        .expect("write WAL");
}

/// What `pg_replication_slots` says of the test's slot.
async fn wal_status(db: &TestDb) -> Option<String> {
    db.sql
        .query_opt(
            "SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1",
            &[&db.name],
        )
        .await
        .expect("query slots")
        .and_then(|r| r.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_near_its_wal_limit_warns_and_once_invalidated_stops_or_is_recreated_with_its_gap_backfilled()
 {
    install_crypto_provider();
    // A cluster of its own: the slot is made to retain too much WAL.
    let cluster =
        start_cluster(ClusterOptions::default().setting("max_slot_wal_keep_size", "64MB"));
    let run = Scenario::new("slotlost")
        .on(&cluster)
        .setup("CREATE TABLE filler (x text)")
        .webhook_with("hook", "/leads", |w| {
            quick_retries(w);
            w.delivery.spool = Some(false);
            w.delivery.retry_for = Some(Duration::from_secs(3600));
        })
        .configure(|c| {
            c.source.on_slot_lost = Some("stop".into());
            c.source.changed_at = Some("updated_at".into());
            c.source.changed_at_margin = Some(Duration::ZERO);
        })
        .start(&leadhook())
        .await;
    let admin = run.sidecar.admin_url().await;
    run.db.insert_leads(1..=1).await;
    wait_for_scores(&run.receiver, "/leads", 1, &run.sidecar).await;
    run.db
        .wait_confirmed("lead 1 confirmed", &run.sidecar)
        .await;

    // The receiver fails: lead 2 holds the slot, and WAL piles up behind it.
    fails_at(&run.receiver, "/leads", 503);
    run.db.insert_leads(2..=2).await;
    run.receiver
        .wait_for("/leads", 2, WAIT)
        .await
        .expect("lead 2 tried");
    fill_wal(&run.db, 62).await;
    run.sidecar.wait_log("is close to being invalidated").await;
    let safe = metric(&admin, "leadhook_slot_safe_wal_bytes", &[]).await;
    assert!(
        safe < 64.0 * 1024.0 * 1024.0 * 0.2,
        "less than a fifth of max_slot_wal_keep_size left: {safe}"
    );

    fill_wal(&run.db, 40).await;
    run.db
        .sql
        .batch_execute("CHECKPOINT")
        .await
        .expect("checkpoint");
    eventually(
        "the server invalidates the slot",
        || "wal_status is not yet 'lost'".to_owned(),
        async || wal_status(&run.db).await.as_deref() == Some("lost"),
    )
    .await;
    run.db.insert_leads(3..=4).await; // committed while the slot is lost
    run.receiver.set_responder(|_, _| Reply::ok());
    let body = RefCell::new(String::new());
    eventually(
        "/readyz says the slot is invalidated",
        || body.borrow().clone(),
        async || {
            let (status, text) =
                crate::operations::http_status(&format!("{admin}/readyz"), reqwest::Method::GET)
                    .await;
            let said = status == 503 && text.contains("slot invalidated");
            *body.borrow_mut() = text;
            said
        },
    )
    .await;
    run.sidecar.wait_log("DATA LOSS").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        wal_status(&run.db).await.as_deref(),
        Some("lost"),
        "on_slot_lost = \"stop\" leaves the slot to a person"
    );

    // The person chooses to re-create it.
    let recreate = run
        .config
        .clone()
        .with(|c| c.source.on_slot_lost = Some("recreate".into()));
    run.sidecar.rewrite_config(&recreate.to_toml());
    run.sidecar.restart();
    run.db.wait_streaming(&run.sidecar).await;
    run.sidecar.wait_log("The slot was re-created").await;
    let got = wait_for_these_scores(&run.receiver, "/leads", [2, 3, 4], &run.sidecar).await;
    let backfilled: Vec<i64> = got
        .iter()
        .filter(|r| {
            r.header("webhook-id")
                .is_some_and(|id| id.starts_with("backfill-"))
        })
        .map(|r| data(r)["score"].as_i64().expect("score"))
        .collect();
    let mut sorted = backfilled.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        vec![2, 3, 4],
        "the leads changed in the gap, and none from before it"
    );
    let admin = run.sidecar.admin_url().await;
    assert_eq!(
        metric(&admin, "leadhook_slot_recreated_total", &[]).await,
        1.0
    );
    let log = run.sidecar.log();
    assert!(
        log.contains("the leads whose updated_at is at or after"),
        "the ERROR says how the gap is recovered:\n{log}"
    );
}

#[tokio::test]
async fn with_on_slot_lost_stop_a_dropped_slot_is_left_to_a_person_and_readyz_says_so() {
    install_crypto_provider();
    let run = Scenario::new("loststop")
        .configure(|c| c.source.on_slot_lost = Some("stop".into()))
        .start(&leadhook())
        .await;
    run.db.insert_leads(1..=1).await;
    wait_for_scores(&run.receiver, "/leads", 1, &run.sidecar).await;
    drop_slot(&run.db).await;
    run.sidecar.wait_log("DATA LOSS").await;
    let admin = run.sidecar.admin_url().await;
    let (status, body) =
        crate::operations::http_status(&format!("{admin}/readyz"), reqwest::Method::GET).await;
    assert_eq!(status, 503);
    assert!(
        body.contains("slot lost") && body.contains("on_slot_lost"),
        "{body}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let exists: bool = run
        .db
        .sql
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)",
            &[&run.db.name],
        )
        .await
        .expect("query slots")
        .get(0);
    assert!(!exists, "the slot is not re-created");
    assert!(
        run.sidecar.log().contains("leadhook backfill --where"),
        "the ERROR says how to deliver the gap without changed_at"
    );
}

#[tokio::test]
async fn a_changed_at_column_the_table_does_not_have_is_refused_with_the_key_named() {
    let run = Scenario::new("changedat").start(&leadhook()).await;
    let config = run
        .config
        .clone()
        .with(|c| c.source.changed_at = Some("touched_at".into()));
    let checked = run_command(&config, &["check"]).await;
    assert_eq!(checked.code, Some(1), "{}", checked.stdout);
    assert!(
        checked
            .stdout
            .contains("source.changed_at: column \"touched_at\" not found"),
        "{}",
        checked.stdout
    );
}
