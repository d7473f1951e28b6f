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
