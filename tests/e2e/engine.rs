//! The delivery engine: retries, Retry-After, dead letters and replay,
//! ordered concurrency, independent webhooks, blocking, signatures.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use leadhook::throwaway::ClusterOptions;

use crate::support::*;

const WAIT: Duration = Duration::from_secs(60);

/// Polls `check` until it holds, or fails with `what` and the sidecar's log.
async fn eventually<F: AsyncFnMut() -> bool>(sidecar: &Sidecar, what: &str, mut check: F) {
    let deadline = Instant::now() + WAIT;
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "{what}; sidecar log:\n{}",
            sidecar.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn dead_letters(db: &TestDb) -> Vec<tokio_postgres::Row> {
    db.sql
        .query("SELECT webhook, webhook_id, payload, attempts, last_status, last_error FROM leadhook.dead_letters ORDER BY id", &[])
        .await
        .unwrap_or_default()
}

fn email(request: &ReceivedRequest) -> String {
    data(request)["email"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn a_receiver_failing_three_times_gets_the_change_on_the_fourth_attempt() {
    let db = TestDb::create(shared_cluster(), "flaky").await;
    let receiver = Receiver::start(0).await.unwrap();
    receiver.set_responder(|_, n| {
        if n <= 3 {
            Reply::status(503)
        } else {
            Reply::ok()
        }
    });
    let hook = webhook("hook", &receiver, "/leads") + "initial_backoff = \"100ms\"\n";
    let mut sidecar = Sidecar::start(&db.config(&hook));
    db.wait_streaming(&mut sidecar).await;

    db.sql
        .batch_execute("INSERT INTO leads (email) VALUES ('flaky@example.com')")
        .await
        .unwrap();
    let got = wait_or_diagnose(&receiver, "/leads", 4, &db, &sidecar).await;
    let ids: HashSet<&str> = got
        .iter()
        .map(|r| r.header("webhook-id").unwrap())
        .collect();
    assert_eq!(ids.len(), 1, "every attempt carries the same webhook-id");
    assert!(got.windows(2).all(|w| w[0].body == w[1].body));
    assert_eq!(
        got[0].header("user-agent"),
        Some(concat!("leadhook/", env!("CARGO_PKG_VERSION")))
    );
    assert!(dead_letters(&db).await.is_empty());
}

#[tokio::test]
async fn retry_after_on_429_is_honoured() {
    let db = TestDb::create(shared_cluster(), "retry_after").await;
    let receiver = Receiver::start(0).await.unwrap();
    receiver.set_responder(|_, n| {
        if n == 1 {
            Reply::status(429).with_header("Retry-After", "2")
        } else {
            Reply::ok()
        }
    });
    let hook = webhook("hook", &receiver, "/leads") + "initial_backoff = \"50ms\"\n";
    let mut sidecar = Sidecar::start(&db.config(&hook));
    db.wait_streaming(&mut sidecar).await;

    db.sql
        .batch_execute("INSERT INTO leads (email) VALUES ('later@example.com')")
        .await
        .unwrap();
    let got = receiver.wait_for("/leads", 2, WAIT).await.unwrap();
    let gap = got[1]
        .received_at
        .duration_since(got[0].received_at)
        .unwrap();
    assert!(
        gap >= Duration::from_millis(1900),
        "waited {gap:?} instead of the 2 s asked for"
    );
}

#[tokio::test]
async fn a_change_that_always_fails_is_dead_lettered_and_the_stream_moves_on_then_replay_delivers_it()
 {
    let db = TestDb::create(shared_cluster(), "dead").await;
    let receiver = Receiver::start(0).await.unwrap();
    let healthy = Arc::new(AtomicBool::new(false));
    let flag = healthy.clone();
    receiver.set_responder(move |request, _| {
        if email(request) == "dead@example.com" && !flag.load(Ordering::SeqCst) {
            Reply::status(500)
        } else {
            Reply::ok()
        }
    });
    let hook =
        webhook("hook", &receiver, "/leads") + "max_attempts = 2\ninitial_backoff = \"50ms\"\n";
    let config = db.config(&hook);
    let mut sidecar = Sidecar::start(&config);
    db.wait_streaming(&mut sidecar).await;

    db.sql
        .batch_execute("INSERT INTO leads (email) VALUES ('dead@example.com')")
        .await
        .unwrap();
    let after_dead = db.insert_lsn().await;
    db.sql
        .batch_execute("INSERT INTO leads (email) VALUES ('alive@example.com')")
        .await
        .unwrap();
    eventually(&sidecar, "the later change was not delivered", async || {
        receiver
            .requests_to("/leads")
            .iter()
            .any(|r| email(r) == "alive@example.com")
    })
    .await;
    eventually(&sidecar, "no dead letter was written", async || {
        !dead_letters(&db).await.is_empty()
    })
    .await;
    eventually(
        &sidecar,
        "the confirmed position did not move past the dead letter",
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

    let (code, listing, _, _) = run_leadhook(&config, &["dead-letters", "list"], &[]);
    // Replay talks to this test's receiver: run it off the test's thread.
    let replay_config = config.clone();
    assert_eq!(code, Some(0), "{listing}");
    assert!(listing.starts_with("ID  WEBHOOK  WEBHOOK-ID"), "{listing}");
    assert!(
        listing.contains("dead@example.com")
            && listing.contains(attempts[0].header("webhook-id").unwrap()),
        "{listing}"
    );

    healthy.store(true, Ordering::SeqCst);
    let (code, report, _, _) = tokio::task::spawn_blocking(move || {
        run_leadhook(
            &replay_config,
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
    let db = TestDb::create(shared_cluster(), "final").await;
    let receiver = Receiver::start(0).await.unwrap();
    let elsewhere = receiver.url("/elsewhere");
    receiver.set_responder(move |request, _| match request.path.as_str() {
        "/gone" => Reply::status(410),
        "/moved" => Reply::status(302).with_header("Location", &elsewhere),
        _ => Reply::ok(),
    });
    let hooks = format!(
        "{}no_retry_statuses = [410, 302]\n\n{}no_retry_statuses = [410, 302]\n",
        webhook("gone", &receiver, "/gone"),
        webhook("moved", &receiver, "/moved")
    );
    let mut sidecar = Sidecar::start(&db.config(&hooks));
    db.wait_streaming(&mut sidecar).await;

    db.sql
        .batch_execute("INSERT INTO leads (email) VALUES ('final@example.com')")
        .await
        .unwrap();
    eventually(&sidecar, "both webhooks should dead-letter", async || {
        dead_letters(&db).await.len() == 2
    })
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
    let db = TestDb::create(shared_cluster(), "dlfail").await;
    let receiver = Receiver::start(0).await.unwrap();
    receiver.set_responder(|_, _| Reply::status(500));
    let hook = webhook("hook", &receiver, "/leads") + "max_attempts = 1\n";
    let mut sidecar = Sidecar::start(&db.config(&hook));
    db.wait_streaming(&mut sidecar).await;

    db.sql
        .batch_execute("ALTER TABLE leadhook.dead_letters RENAME TO away")
        .await
        .unwrap();
    db.sql
        .batch_execute("INSERT INTO leads (email) VALUES ('held@example.com')")
        .await
        .unwrap();
    let after = db.insert_lsn().await;
    eventually(&sidecar, "the failed store should be logged", async || {
        sidecar.log().contains("cannot store a dead letter")
    })
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
        &sidecar,
        "the letter should be stored once the table is back",
        async || dead_letters(&db).await.len() == 1,
    )
    .await;
    eventually(&sidecar, "the position should move on", async || {
        db.confirmed_past(&after).await
    })
    .await;
}

#[tokio::test]
async fn a_permanently_failing_webhook_does_not_hold_up_a_healthy_one() {
    let db = TestDb::create(shared_cluster(), "independent").await;
    let receiver = Receiver::start(0).await.unwrap();
    receiver.set_responder(|request, _| {
        if request.path == "/down" {
            Reply::status(503)
        } else {
            Reply::ok()
        }
    });
    let hooks = format!(
        "{}\n{}",
        webhook("down", &receiver, "/down"),
        webhook("healthy", &receiver, "/healthy")
    );
    let mut sidecar = Sidecar::start(&db.config(&hooks));
    db.wait_streaming(&mut sidecar).await;

    // Far more than the failing webhook can hold in flight and queued.
    db.sql
        .batch_execute(
            "INSERT INTO leads (email, score) SELECT 'i' || i, i FROM generate_series(1, 1500) i",
        )
        .await
        .unwrap();
    db.sql
        .batch_execute("INSERT INTO leads (email, score) VALUES ('last', 1501)")
        .await
        .unwrap();
    let got = receiver.wait_for("/healthy", 1501, WAIT).await.unwrap();
    let scores: HashSet<i64> = got
        .iter()
        .map(|r| data(r)["score"].as_i64().unwrap())
        .collect();
    assert_eq!(scores.len(), 1501);
    assert!(
        sidecar.log().contains("webhook is falling behind"),
        "{}",
        sidecar.log()
    );
    assert!(
        !db.confirmed_past(&db.insert_lsn().await).await,
        "the failing webhook still holds the position"
    );
}

#[tokio::test]
async fn changes_of_one_lead_stay_in_order_while_different_leads_go_concurrently() {
    let db = TestDb::create(shared_cluster(), "ordered").await;
    let receiver = Receiver::start(0).await.unwrap();
    receiver.set_responder(|_, _| Reply::ok().after(Duration::from_millis(fastrand::u64(0..15))));
    let mut sidecar = Sidecar::start(&db.config(&webhook("hook", &receiver, "/leads")));
    db.wait_streaming(&mut sidecar).await;

    // 200 leads, then 9 updates of each: 2 000 changes.
    db.sql
        .batch_execute(
            "INSERT INTO leads (email, score) SELECT 'o' || i, 0 FROM generate_series(1, 200) i",
        )
        .await
        .unwrap();
    for _ in 0..9 {
        db.sql
            .batch_execute("UPDATE leads SET score = score + 1")
            .await
            .unwrap();
    }
    let got = receiver.wait_for("/leads", 2000, WAIT).await.unwrap();
    let mut per_lead: HashMap<String, Vec<i64>> = HashMap::new();
    for request in &got {
        per_lead
            .entry(email(request))
            .or_default()
            .push(data(request)["score"].as_i64().unwrap());
    }
    assert_eq!(per_lead.len(), 200);
    for (lead, scores) in &per_lead {
        assert_eq!(
            scores,
            &(0..=9).collect::<Vec<_>>(),
            "changes of {lead} out of order"
        );
    }
    assert!(
        receiver.max_in_flight() > 1,
        "deliveries should overlap (max in flight {})",
        receiver.max_in_flight()
    );
}

#[tokio::test]
async fn block_mode_keeps_retrying_and_holds_the_position_instead_of_dead_lettering() {
    let db = TestDb::create(shared_cluster(), "block").await;
    let receiver = Receiver::start(0).await.unwrap();
    receiver.set_responder(|_, n| {
        if n <= 6 {
            Reply::status(500)
        } else {
            Reply::ok()
        }
    });
    let hook = webhook("hook", &receiver, "/leads")
        + "on_exhausted = \"block\"\nmax_attempts = 2\ninitial_backoff = \"50ms\"\nmax_backoff = \"300ms\"\n";
    let mut sidecar = Sidecar::start(&db.config(&hook));
    db.wait_streaming(&mut sidecar).await;

    db.sql
        .batch_execute("INSERT INTO leads (email) VALUES ('blocked@example.com')")
        .await
        .unwrap();
    let after = db.insert_lsn().await;
    receiver.wait_for("/leads", 4, WAIT).await.unwrap();
    assert!(!db.confirmed_past(&after).await, "held while blocked");
    receiver.wait_for("/leads", 7, WAIT).await.unwrap();
    eventually(
        &sidecar,
        "the position should move once delivered",
        async || db.confirmed_past(&after).await,
    )
    .await;
    assert!(
        dead_letters(&db).await.is_empty(),
        "block mode never dead-letters"
    );
}

#[tokio::test]
async fn signed_requests_verify_with_an_independent_hmac() {
    let db = TestDb::create(shared_cluster(), "signed").await;
    let receiver = Receiver::start(0).await.unwrap();
    let key: Vec<u8> = (0..24).map(|_| fastrand::u8(..)).collect();
    let secret = format!("whsec_{}", STANDARD.encode(&key));
    let hook = webhook("hook", &receiver, "/leads") + "secret = \"${SIGNING_SECRET}\"\n";
    let mut sidecar = Sidecar::start_with_env(&db.config(&hook), &[("SIGNING_SECRET", &secret)]);
    db.wait_streaming(&mut sidecar).await;

    db.sql
        .batch_execute(
            "INSERT INTO leads (email, notes) VALUES ('signed@example.com', 'ünïcode ✓')",
        )
        .await
        .unwrap();
    let got = receiver.wait_for("/leads", 1, WAIT).await.unwrap();
    let request = &got[0];
    let id = request.header("webhook-id").unwrap();
    let timestamp = request.header("webhook-timestamp").unwrap();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (now - timestamp.parse::<i64>().unwrap()).abs() < 60,
        "timestamp is the sending time"
    );
    let mut signed = format!("{id}.{timestamp}.").into_bytes();
    signed.extend_from_slice(&request.body);
    let tag = ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key),
        &signed,
    );
    assert_eq!(
        request.header("webhook-signature"),
        Some(format!("v1,{}", STANDARD.encode(tag.as_ref())).as_str())
    );
    assert!(
        !sidecar.log().contains(&secret[6..]),
        "the secret is never logged"
    );
}

#[tokio::test]
async fn a_sidecar_killed_during_retries_loses_nothing() {
    let db = TestDb::create(shared_cluster(), "killretry").await;
    let receiver = Receiver::start(0).await.unwrap();
    let healthy = Arc::new(AtomicBool::new(false));
    let flag = healthy.clone();
    receiver.set_responder(move |_, _| {
        if flag.load(Ordering::SeqCst) {
            Reply::ok()
        } else {
            Reply::status(503)
        }
    });
    let hook = webhook("hook", &receiver, "/leads") + "initial_backoff = \"200ms\"\n";
    let mut sidecar = Sidecar::start(&db.config(&hook));
    db.wait_streaming(&mut sidecar).await;

    db.sql
        .batch_execute(
            "INSERT INTO leads (email, score) SELECT 'k' || i, i FROM generate_series(1, 50) i",
        )
        .await
        .unwrap();
    wait_or_diagnose(&receiver, "/leads", 100, &db, &sidecar).await;
    sidecar.kill();
    let recovered_at = SystemTime::now();
    healthy.store(true, Ordering::SeqCst);
    sidecar.restart();
    eventually(
        &sidecar,
        "all 50 changes should be delivered after the restart",
        async || {
            let delivered: HashSet<i64> = receiver
                .requests_to("/leads")
                .iter()
                .filter(|r| r.received_at >= recovered_at)
                .map(|r| data(r)["score"].as_i64().unwrap())
                .collect();
            delivered.len() == 50
        },
    )
    .await;
    assert!(dead_letters(&db).await.is_empty());
}

#[tokio::test]
async fn dead_letter_commands_explain_a_missing_table() {
    let db = TestDb::create(shared_cluster(), "nodl").await;
    let (code, _, stderr, _) = run_leadhook(&db.config(""), &["dead-letters", "list"], &[]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains(
            "there is no dead-letter table \"leadhook\".dead_letters yet: `leadhook run` creates it"
        ),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_slow_webhook_falls_behind_then_catches_up_even_through_one_large_transaction() {
    let db = TestDb::create(shared_cluster(), "catchup").await;
    let receiver = Receiver::start(0).await.unwrap();
    // Every request to /slow times out (300 ms) and is dead-lettered at once.
    receiver.set_responder(|request, _| {
        if request.path == "/slow" {
            Reply::ok().after(Duration::from_secs(2))
        } else {
            Reply::ok()
        }
    });
    let hooks = format!(
        "{}timeout = \"300ms\"\nmax_attempts = 1\n\n{}",
        webhook("slow", &receiver, "/slow"),
        webhook("fast", &receiver, "/fast")
    );
    let mut sidecar = Sidecar::start(&db.config(&hooks));
    db.wait_streaming(&mut sidecar).await;

    // One transaction, far larger than the slow webhook takes before it lags.
    db.sql
        .batch_execute(
            "INSERT INTO leads (email, score) SELECT 'c' || i, i FROM generate_series(1, 1500) i",
        )
        .await
        .unwrap();
    let after = db.insert_lsn().await;
    wait_or_diagnose(&receiver, "/fast", 1500, &db, &sidecar).await;
    eventually(
        &sidecar,
        "the fast webhook should get every change",
        async || {
            let got: HashSet<i64> = receiver
                .requests_to("/fast")
                .iter()
                .map(|r| data(r)["score"].as_i64().unwrap())
                .collect();
            got.len() == 1500
        },
    )
    .await;
    eventually(&sidecar, "the slow webhook should get through the transaction", async || {
        let row = db.sql.query_one("SELECT count(DISTINCT webhook_id) FROM leadhook.dead_letters WHERE webhook = 'slow'", &[]).await;
        row.map(|r| r.get::<_, i64>(0)).unwrap_or(0) == 1500
    })
    .await;
    eventually(
        &sidecar,
        "the position should move past the transaction",
        async || db.confirmed_past(&after).await,
    )
    .await;
    let log = sidecar.log();
    assert!(
        log.contains("webhook is falling behind") && log.contains("caught up"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_is_committed_durably_before_the_stream_moves_past_it() {
    // A cluster of its own: a synchronous standby that never connects makes
    // every commit with synchronous_commit = on wait, visibly. The cluster's
    // own default is off (like a server tuned for speed), so only a commit
    // that asks for durability waits.
    let cluster = start_cluster(ClusterOptions::default());
    let db = TestDb::create(&cluster, "durable").await;
    let receiver = Receiver::start(0).await.unwrap();
    receiver.set_responder(|_, _| Reply::status(410));
    let hook = webhook("hook", &receiver, "/gone") + "no_retry_statuses = [410]\n";
    let mut sidecar = Sidecar::start(&db.config(&hook));
    db.wait_streaming(&mut sidecar).await;
    let admin = connect(&cluster.url("postgres")).await;
    set_system(&admin, "SET synchronous_standby_names = 'ghost'").await;
    db.sql
        .batch_execute("SET synchronous_commit = local")
        .await
        .unwrap();
    db.insert_scores(1..=1).await;
    let committed = db.insert_lsn().await;

    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let waiting: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep' AND query LIKE '%dead_letters%'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if waiting == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the dead letter never waited for a durable commit; log:\n{}",
            sidecar.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !db.confirmed_past(&committed).await,
        "the slot moved past a change whose dead letter is not yet durable"
    );

    set_system(&admin, "RESET synchronous_standby_names").await;
    let deadline = std::time::Instant::now() + WAIT;
    while !db.confirmed_past(&committed).await {
        assert!(std::time::Instant::now() < deadline, "never confirmed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
