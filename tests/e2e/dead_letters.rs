//! Dead letters: what is stored when a change cannot be delivered, that the
//! stream waits until it is stored durably, and listing and replaying them.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::support::*;

/// The dead-letter table's rows, oldest first (none if it does not exist).
pub(crate) async fn dead_letters(db: &TestDb) -> Vec<tokio_postgres::Row> {
    db.sql
        .query("SELECT webhook, webhook_id, payload, attempts, last_status, last_error FROM leadhook.dead_letters ORDER BY id", &[])
        .await
        .unwrap_or_default()
}

/// The `email` of a delivered payload ("" when null).
pub(crate) fn email(request: &ReceivedRequest) -> String {
    data(request)["email"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn a_change_that_always_fails_is_dead_lettered_and_the_stream_moves_on_then_replay_delivers_it()
 {
    let Running {
        db,
        receiver,
        sidecar,
        config,
    } = Scenario::new("dead")
        .webhook_with("hook", "/leads", |w| {
            w.delivery.max_attempts = Some(2);
            w.delivery.initial_backoff = Some(Duration::from_millis(50));
        })
        .start(&leadhook())
        .await;
    let healthy = Arc::new(AtomicBool::new(false));
    let flag = healthy.clone();
    receiver.set_responder(move |request, _| {
        if email(request) == "dead@example.com" && !flag.load(Ordering::SeqCst) {
            Reply::status(500)
        } else {
            Reply::ok()
        }
    });

    db.sql
        .batch_execute("INSERT INTO leads (email) VALUES ('dead@example.com')")
        .await
        .unwrap();
    let after_dead = db.insert_lsn().await;
    db.sql
        .batch_execute("INSERT INTO leads (email) VALUES ('alive@example.com')")
        .await
        .unwrap();
    eventually(
        "the later change was not delivered",
        || sidecar.log(),
        async || {
            receiver
                .requests_to("/leads")
                .iter()
                .any(|r| email(r) == "alive@example.com")
        },
    )
    .await;
    eventually(
        "no dead letter was written",
        || sidecar.log(),
        async || !dead_letters(&db).await.is_empty(),
    )
    .await;
    eventually(
        "the confirmed position did not move past the dead letter",
        || sidecar.log(),
        async || db.confirmed_past(&after_dead).await,
    )
    .await;

    let attempts: Vec<ReceivedRequest> = receiver
        .requests_to("/leads")
        .into_iter()
        .filter(|r| email(r) == "dead@example.com")
        .collect();
    assert_eq!(attempts.len(), 2, "max_attempts = 2");
    let rows = dead_letters(&db).await;
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row.get::<_, String>(0), "hook");
    assert_eq!(
        Some(row.get::<_, String>(1).as_str()),
        attempts[0].header("webhook-id")
    );
    assert_eq!(
        row.get::<_, String>(2).as_bytes(),
        &attempts[0].body[..],
        "the payload exactly as sent"
    );
    assert_eq!(row.get::<_, i32>(3), 2);
    assert_eq!(row.get::<_, Option<i32>>(4), Some(500));
    assert_eq!(row.get::<_, String>(5), "HTTP 500");

    let config = config.to_toml();
    let Finished {
        code,
        stdout: listing,
        ..
    } = leadhook().run(&config, &["dead-letters", "list"], &[]);
    assert_eq!(code, Some(0), "{listing}");
    assert!(listing.starts_with("ID  WEBHOOK  WEBHOOK-ID"), "{listing}");
    assert!(
        listing.contains("dead@example.com")
            && listing.contains(attempts[0].header("webhook-id").unwrap()),
        "{listing}"
    );

    healthy.store(true, Ordering::SeqCst);
    // Replay talks to this test's receiver: run it off the test's thread.
    let Finished {
        code,
        stdout: report,
        ..
    } = tokio::task::spawn_blocking(move || {
        leadhook().run(
            &config,
            &["dead-letters", "replay", "--webhook", "hook"],
            &[],
        )
    })
    .await
    .unwrap();
    assert_eq!(code, Some(0), "{report}");
    assert!(
        report.contains("replayed: 1 delivered and removed, 0 failed and kept, 0 skipped"),
        "{report}"
    );
    let replayed = receiver
        .requests_to("/leads")
        .into_iter()
        .filter(|r| email(r) == "dead@example.com")
        .nth(2)
        .expect("replayed request");
    assert_eq!(
        replayed.header("webhook-id"),
        attempts[0].header("webhook-id"),
        "replay keeps the original id"
    );
    assert_eq!(replayed.body, attempts[0].body);
    assert!(
        dead_letters(&db).await.is_empty(),
        "delivered letters are removed"
    );
}

#[tokio::test]
async fn a_final_status_is_dead_lettered_at_once_and_redirects_are_not_followed() {
    let final_statuses = |w: &mut Webhook| w.delivery.no_retry_statuses = Some(vec![410, 302]);
    let Running {
        db,
        receiver,
        sidecar,
        ..
    } = Scenario::new("final")
        .webhook_with("gone", "/gone", final_statuses)
        .webhook_with("moved", "/moved", final_statuses)
        .start(&leadhook())
        .await;
    let elsewhere = receiver.url("/elsewhere");
    receiver.set_responder(move |request, _| match request.path.as_str() {
        "/gone" => Reply::status(410),
        "/moved" => Reply::status(302).with_header("Location", &elsewhere),
        _ => Reply::ok(),
    });

    db.sql
        .batch_execute("INSERT INTO leads (email) VALUES ('final@example.com')")
        .await
        .unwrap();
    eventually(
        "both webhooks should dead-letter",
        || sidecar.log(),
        async || dead_letters(&db).await.len() == 2,
    )
    .await;
    assert_eq!(
        receiver.requests_to("/gone").len(),
        1,
        "a final status is not retried"
    );
    assert_eq!(receiver.requests_to("/moved").len(), 1);
    assert!(
        receiver.requests_to("/elsewhere").is_empty(),
        "redirects are not followed"
    );
    let statuses: HashSet<Option<i32>> = dead_letters(&db).await.iter().map(|r| r.get(4)).collect();
    assert_eq!(statuses, HashSet::from([Some(410), Some(302)]));
    assert!(
        sidecar.log().contains("redirect to http://127.0.0.1"),
        "the Location is logged: {}",
        sidecar.log()
    );
}

#[tokio::test]
async fn the_stream_is_held_while_a_dead_letter_cannot_be_stored() {
    let Running {
        db,
        receiver,
        sidecar,
        ..
    } = Scenario::new("dlfail")
        .webhook_with("hook", "/leads", |w| w.delivery.max_attempts = Some(1))
        .start(&leadhook())
        .await;
    receiver.set_responder(|_, _| Reply::status(500));

    db.sql
        .batch_execute("ALTER TABLE leadhook.dead_letters RENAME TO away")
        .await
        .unwrap();
    db.sql
        .batch_execute("INSERT INTO leads (email) VALUES ('held@example.com')")
        .await
        .unwrap();
    let after = db.insert_lsn().await;
    eventually(
        "the failed store should be logged",
        || sidecar.log(),
        async || sidecar.log().contains("cannot store a dead letter"),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !db.confirmed_past(&after).await,
        "the position moved past a change that is neither delivered nor stored"
    );

    db.sql
        .batch_execute("ALTER TABLE leadhook.away RENAME TO dead_letters")
        .await
        .unwrap();
    eventually(
        "the letter should be stored once the table is back",
        || sidecar.log(),
        async || dead_letters(&db).await.len() == 1,
    )
    .await;
    eventually(
        "the position should move on",
        || sidecar.log(),
        async || db.confirmed_past(&after).await,
    )
    .await;
}

#[tokio::test]
async fn dead_letter_commands_explain_a_missing_table() {
    let db = TestDb::create(shared_cluster(), "nodl").await;
    let Finished { code, stderr, .. } =
        leadhook().run(&db.config().to_toml(), &["dead-letters", "list"], &[]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains(
            "there is no dead-letter table \"leadhook\".dead_letters yet: `leadhook run` creates it"
        ),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_is_committed_durably_before_the_stream_moves_past_it() {
    // A cluster of its own: a synchronous standby that never connects makes
    // every commit with synchronous_commit = on wait, visibly. The cluster's
    // own default is off (like a server tuned for speed), so only a commit
    // that asks for durability waits.
    let cluster = start_cluster(ClusterOptions::default());
    let Running {
        db,
        receiver,
        sidecar,
        ..
    } = Scenario::new("durable")
        .on(&cluster)
        .webhook_with("hook", "/gone", |w| {
            w.delivery.no_retry_statuses = Some(vec![410]);
        })
        .start(&leadhook())
        .await;
    receiver.set_responder(|_, _| Reply::status(410));
    let admin = connect(&cluster.url("postgres")).await;
    set_system(&admin, "SET synchronous_standby_names = 'ghost'").await;
    db.sql
        .batch_execute("SET synchronous_commit = local")
        .await
        .unwrap();
    db.insert_leads(1..=1).await;
    let committed = db.insert_lsn().await;

    eventually(
        "the dead letter never waited for a durable commit",
        || sidecar.log(),
        async || {
            let waiting: i64 = admin
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep' AND query LIKE '%dead_letters%'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            waiting == 1
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !db.confirmed_past(&committed).await,
        "the slot moved past a change whose dead letter is not yet durable"
    );

    set_system(&admin, "RESET synchronous_standby_names").await;
    eventually(
        "never confirmed",
        || sidecar.log(),
        async || db.confirmed_past(&committed).await,
    )
    .await;
    let letters: i64 = db
        .sql
        .query_one("SELECT count(*) FROM leadhook.dead_letters", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(letters, 1);
}

/// `ALTER SYSTEM <change>`, then a reload so it takes effect.
async fn set_system(admin: &tokio_postgres::Client, change: &str) {
    admin
        .batch_execute(&format!("ALTER SYSTEM {change}"))
        .await
        .unwrap();
    admin
        .batch_execute("SELECT pg_reload_conf()")
        .await
        .unwrap();
}
