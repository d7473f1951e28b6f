//! Failover slots on PostgreSQL 17: the slot is created with FAILOVER, a
//! physical standby with slot synchronisation keeps a copy, and after the
//! standby is promoted the sidecar (a multi-host URL with
//! `target_session_attrs=read-write`) resumes on it from the synchronised
//! slot: every lead committed is delivered, none lost.

use std::collections::HashSet;
use std::time::Duration;

use leadhook_testkit::cluster::PgBinaries;

use crate::support::*;

/// Whether `slot` is a failover slot.
async fn is_failover_slot(sql: &tokio_postgres::Client, slot: &str) -> bool {
    sql.query_one(
        "SELECT failover FROM pg_replication_slots WHERE slot_name = $1",
        &[&slot],
    )
    .await
    .expect("query slots")
    .get(0)
}

/// What the standby's copy of the slot says: synced, persistent, and how far.
async fn synced_slot(standby: &tokio_postgres::Client, slot: &str) -> Option<(bool, String)> {
    standby
        .query_opt(
            "SELECT synced AND NOT temporary, coalesce(confirmed_flush_lsn::text, '0/0')
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .ok()
        .flatten()
        .map(|r| (r.get(0), r.get(1)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgresql_17_a_promoted_standby_resumes_from_the_synchronised_failover_slot_losing_nothing()
 {
    let bins = PgBinaries::find_17().unwrap_or_else(|e| panic!("{e}"));
    let mut primary = start_cluster(ClusterOptions::default().binaries(bins));
    let admin_sql = connect(&primary.url("postgres")).await;
    admin_sql
        .execute(
            "SELECT pg_create_physical_replication_slot('standby_slot', true)",
            &[],
        )
        .await
        .expect("the standby's physical slot");
    let db = TestDb::create(&primary, "failover").await;
    let standby = tokio::task::block_in_place(|| {
        primary.start_standby_with(&[
            ("primary_slot_name", "standby_slot"),
            ("hot_standby_feedback", "on"),
            ("sync_replication_slots", "on"),
        ])
    })
    .expect("start a standby");
    // After the copy: the promoted standby must not wait for a slot of its own.
    let admin_sql = connect(&primary.url("postgres")).await;
    for statement in [
        "ALTER SYSTEM SET synchronized_standby_slots = 'standby_slot'",
        "SELECT pg_reload_conf()",
    ] {
        admin_sql.batch_execute(statement).await.expect(statement);
    }

    let receiver = Receiver::start(0).await.expect("a receiver");
    let url = format!(
        "postgres://postgres:postgres@127.0.0.1:{},127.0.0.1:{}/{}?target_session_attrs=read-write",
        primary.port(),
        standby.port(),
        db.name
    );
    let config = SidecarConfig::new(url)
        .slot(&db.name)
        .webhook(Webhook::to(&receiver, "hook", "/leads").with(quick_retries));
    let checked = run_command(&config, &["check"]).await;
    assert!(
        checked.stdout.contains("is a failover slot")
            && checked.stdout.contains("sync_replication_slots = on")
            && checked
                .stdout
                .contains("synchronized_standby_slots = \"standby_slot\""),
        "check explains the standby's settings:\n{}",
        checked.stdout
    );
    // A connection of its own: making the standby restarted the primary.
    let sql = connect(&db.url).await;
    let sidecar = leadhook().start(&config.to_toml());
    sidecar.wait_streaming(&sql, &db.name).await;
    assert!(
        is_failover_slot(&sql, &db.name).await,
        "the slot is created with FAILOVER"
    );
    insert_leads(&sql, 1..=10).await;
    wait_for_these_scores(&receiver, "/leads", 1..=10, &sidecar).await;

    // Committed and on the standby, not yet delivered: the receiver fails.
    fails_at(&receiver, "/leads", 503);
    insert_leads(&sql, 11..=20).await;
    let written = wal_insert_lsn(&sql).await;
    let standby_sql = connect(&standby.url("postgres")).await;
    // The synchronisation worker naps up to 30 s between rounds while the
    // standby had no slot to copy: this wait is most of the test's time.
    eventually_within(
        Duration::from_secs(90),
        "the standby replays the leads and synchronises the slot",
        || sidecar.log(),
        async || {
            let replayed: bool = standby_sql
                .query_one(
                    "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn",
                    &[&written],
                )
                .await
                .is_ok_and(|r| r.get(0));
            replayed
                && synced_slot(&standby_sql, &db.name)
                    .await
                    .is_some_and(|(ready, _)| ready)
        },
    )
    .await;
    let seen_before: HashSet<String> = ids_of(&receiver.requests_to("/leads"));

    // The failover: the primary is gone, the standby promoted.
    tokio::task::block_in_place(|| primary.stop()).expect("stop the primary");
    standby_sql
        .execute("SELECT pg_promote()", &[])
        .await
        .expect("promote");
    receiver.set_responder(|_, _| Reply::ok());
    let new_primary = connect(&standby.url(&db.name)).await;
    sidecar.wait_streaming(&new_primary, &db.name).await;
    insert_leads(&new_primary, 21..=25).await;
    let got = wait_for_these_scores(&receiver, "/leads", 1..=25, &sidecar).await;
    let scores = scores_of(&got);
    assert_eq!(scores, (1..=25).collect(), "every lead delivered");
    let log = sidecar.log();
    assert!(
        !log.contains("DATA LOSS"),
        "the synchronised slot was used:\n{log}"
    );
    let new_ids: Vec<String> = got
        .iter()
        .filter(|r| data(r)["score"].as_i64().is_some_and(|s| s > 20))
        .map(|r| r.header("webhook-id").expect("id").to_owned())
        .collect();
    assert_eq!(new_ids.len(), 5);
    assert!(
        new_ids.iter().all(|id| !seen_before.contains(id)),
        "ids on the new primary are new: {new_ids:?}"
    );
}

#[tokio::test]
async fn check_says_what_failover_needs_on_this_server_version() {
    let run = Scenario::new("failover_check").start(&leadhook()).await;
    let version: i32 = run
        .db
        .sql
        .query_one("SELECT current_setting('server_version_num')::int4", &[])
        .await
        .expect("server version")
        .get(0);
    let plain = run_command(&run.config, &["check"]).await;
    let forced = run_command(
        &run.config.clone().with(|c| c.source.failover = Some(true)),
        &["check"],
    )
    .await;
    if version < 170_000 {
        assert!(
            plain
                .stdout
                .contains("no failover slots before PostgreSQL 17"),
            "{}",
            plain.stdout
        );
        assert_eq!(forced.code, Some(1), "{}", forced.stdout);
        assert!(
            forced
                .stdout
                .contains("source.failover = true: failover slots need PostgreSQL 17"),
            "{}",
            forced.stdout
        );
    } else {
        assert!(
            plain.stdout.contains("is a failover slot"),
            "{}",
            plain.stdout
        );
        assert!(
            plain.stdout.contains("synchronized_standby_slots is empty"),
            "{}",
            plain.stdout
        );
        assert_eq!(forced.code, Some(0), "{}", forced.stdout);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_slot_on_postgresql_17_is_made_a_failover_slot() {
    let bins = PgBinaries::find_17().unwrap_or_else(|e| panic!("{e}"));
    let cluster = start_cluster(ClusterOptions::default().binaries(bins));
    let db = TestDb::create(&cluster, "failover_alter").await;
    db.sql
        .execute(
            "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
            &[&db.name],
        )
        .await
        .expect("a slot made by hand, without FAILOVER");
    let receiver = Receiver::start(0).await.expect("a receiver");
    let config = db
        .config()
        .webhook(Webhook::to(&receiver, "hook", "/leads"));
    let sidecar = leadhook().start(&config.to_toml());
    db.wait_streaming(&sidecar).await;
    assert!(
        is_failover_slot(&db.sql, &db.name).await,
        "{}",
        sidecar.log()
    );
    assert!(
        sidecar
            .log()
            .contains("made the replication slot a failover slot")
    );
    db.insert_leads(1..=1).await;
    wait_for_scores(&receiver, "/leads", 1, &sidecar).await;
}
