//! Other WAL histories behind the same URL: a restored backup and a
//! failover to a standby. Positions and ids from before must neither skip
//! new commits nor collide with them.

use std::collections::HashSet;

use crate::support::*;

/// The commit LSN inside a replication-mode `webhook-id`
/// (`<system>-<commit LSN>-<commit time>-<index>`).
fn commit_lsn(id: &str) -> &str {
    id.split('-').nth(1).expect("an id with a commit LSN")
}

/// `X/Y` as one number, for comparing positions.
fn lsn_value(lsn: &str) -> u64 {
    let (hi, lo) = lsn.split_once('/').expect("X/Y");
    (u64::from_str_radix(hi, 16).expect("hex") << 32) | u64::from_str_radix(lo, 16).expect("hex")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_backup_gets_every_new_lead_delivered_under_ids_never_seen_before() {
    let mut cluster = start_cluster(ClusterOptions::default());
    let Running {
        db,
        receiver,
        sidecar,
        ..
    } = Scenario::new("restore")
        .on(&cluster)
        .start(&leadhook())
        .await;
    db.insert_leads(1..=5).await;
    wait_for_scores(&receiver, "/leads", 5, &sidecar).await;
    let backup = tokio::task::block_in_place(|| cluster.cold_copy()).expect("cold copy");

    // After the backup: leads the backup will not have, delivered and
    // confirmed, so the sidecar's position moves past what it holds.
    let sql = connect(&db.url).await;
    sidecar.wait_streaming(&sql, &db.name).await;
    insert_leads(&sql, 6..=15).await;
    wait_for_these_scores(&receiver, "/leads", 6..=15, &sidecar).await;
    let written = wal_insert_lsn(&sql).await;
    eventually(
        "never confirmed",
        || sidecar.log(),
        async || slot_confirmed_past(&sql, &db.name, &written).await,
    )
    .await;
    let seen_before = ids_of(&receiver.requests_to("/leads"));

    tokio::task::block_in_place(|| cluster.restore(&backup)).expect("restore");
    let restored = connect(&db.url).await;
    sidecar.wait_streaming(&restored, &db.name).await;
    insert_leads(&restored, 101..=110).await;
    let got = wait_for_these_scores(&receiver, "/leads", 101..=110, &sidecar).await;

    let new: Vec<String> = got
        .iter()
        .filter(|r| data(r)["score"].as_i64().is_some_and(|s| s > 100))
        .map(|r| r.header("webhook-id").expect("id").to_owned())
        .collect();
    let reused: Vec<&String> = new.iter().filter(|id| seen_before.contains(*id)).collect();
    assert!(reused.is_empty(), "ids seen before the restore: {reused:?}");
    // The restored server wrote its new commits over WAL positions the old
    // history had used already: ids made of the position alone could collide.
    let newest_old = seen_before.iter().map(|id| lsn_value(commit_lsn(id))).max();
    let oldest_new = new.iter().map(|id| lsn_value(commit_lsn(id))).min();
    assert!(
        oldest_new < newest_old,
        "the new commits ({oldest_new:?}) lie beyond the old history ({newest_old:?}): this test proves nothing about ids"
    );
    assert!(
        sidecar.log().contains("another WAL history"),
        "the discarded positions were reported:\n{}",
        sidecar.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_failover_the_lost_slot_is_reported_recreated_and_new_leads_are_delivered() {
    let mut primary = start_cluster(ClusterOptions::default());
    let db = TestDb::create(&primary, "failover").await;
    let mut standby = tokio::task::block_in_place(|| primary.start_standby()).expect("standby");
    let both = format!(
        "postgres://postgres:postgres@127.0.0.1:{},127.0.0.1:{}/{}?target_session_attrs=read-write",
        primary.port(),
        standby.port(),
        db.name
    );
    // Not a Scenario: the standby is made after the database and before the
    // sidecar (a copy made later would have the slot).
    let receiver = Receiver::start(0).await.unwrap();
    let config = db
        .config()
        .webhook(Webhook::to(&receiver, "hook", "/leads"))
        .with(|c| c.database.url = format!("{both}&sslmode=disable"));
    let sql = connect(&db.url).await;
    let sidecar = leadhook().start(&config.to_toml());
    sidecar.wait_streaming(&sql, &db.name).await;
    insert_leads(&sql, 1..=5).await;
    wait_for_scores(&receiver, "/leads", 5, &sidecar).await;
    let before = ids_of(&receiver.requests_to("/leads"));

    // The standby has replayed everything; then the primary fails.
    let promoted = connect(&standby.url(&db.name)).await;
    let written = wal_insert_lsn(&sql).await;
    eventually(
        "standby never caught up",
        || sidecar.log(),
        async || {
            promoted
                .query_one(
                    "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn",
                    &[&written],
                )
                .await
                .unwrap()
                .get(0)
        },
    )
    .await;
    tokio::task::block_in_place(|| primary.stop()).expect("stop primary");
    promoted
        .batch_execute("SELECT pg_promote()")
        .await
        .expect("promote");

    sidecar.wait_streaming(&promoted, &db.name).await;
    insert_leads(&promoted, 6..=10).await;
    let got = wait_for_these_scores(&receiver, "/leads", 6..=10, &sidecar).await;
    let after: HashSet<String> = ids_of(&got).difference(&before).cloned().collect();
    assert!(
        after.len() >= 5,
        "new leads have ids of their own: {after:?}"
    );
    let log = sidecar.log();
    assert!(
        log.contains("DATA LOSS") && log.contains(&format!("slot {:?}", db.name)),
        "the lost slot is reported:\n{log}"
    );
    assert!(
        log.contains("timeline 2"),
        "the new history was noticed:\n{log}"
    );
    let admin = sidecar.admin_url().await;
    assert_eq!(
        metric(&admin, "leadhook_slot_recreated_total", &[]).await,
        1.0
    );
    drop(standby.stop());
}
