//! The delivery engine: retries, Retry-After, ordered concurrency,
//! independent webhooks, blocking, signatures, and webhooks that lag.
//! Dead letters and replay are in `dead_letters.rs`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::dead_letters::{dead_letters, email};
use crate::support::*;

#[tokio::test]
async fn a_receiver_failing_three_times_gets_the_change_on_the_fourth_attempt() {
    let Running {
        db,
        receiver,
        sidecar,
        ..
    } = Scenario::new("flaky")
        .webhook_with("hook", "/leads", |w| {
            w.delivery.initial_backoff = Some(Duration::from_millis(100));
        })
        .start(&leadhook())
        .await;
    receiver.set_responder(|_, n| {
        if n <= 3 {
            Reply::status(503)
        } else {
            Reply::ok()
        }
    });

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
    let Running {
        db,
        receiver,
        sidecar: _sidecar,
        ..
    } = Scenario::new("retry_after")
        .webhook_with("hook", "/leads", |w| {
            w.delivery.initial_backoff = Some(Duration::from_millis(50));
        })
        .start(&leadhook())
        .await;
    receiver.set_responder(|_, n| {
        if n == 1 {
            Reply::status(429).with_header("Retry-After", "2")
        } else {
            Reply::ok()
        }
    });

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

/// Webhook "down" answers 503 to everything, "healthy" 200; 1 501 leads are
/// committed, far more than "down" can hold in flight and queued, and
/// "healthy" gets every one of them.
async fn one_down_one_healthy(prefix: &str, spool: bool) -> Running {
    let running = Scenario::new(prefix)
        .webhook("down", "/down")
        .webhook("healthy", "/healthy")
        .configure(move |c| c.delivery.spool = Some(spool))
        .start(&leadhook())
        .await;
    running.receiver.set_responder(|request, _| {
        if request.path == "/down" {
            Reply::status(503)
        } else {
            Reply::ok()
        }
    });
    running.db.insert_leads_in_one_transaction(1..=1500).await;
    running.db.insert_leads(1501..=1501).await;
    let got = running
        .receiver
        .wait_for("/healthy", 1501, WAIT)
        .await
        .unwrap();
    assert_eq!(scores_of(&got).len(), 1501);
    running
}

#[tokio::test]
async fn a_permanently_failing_webhook_spools_and_holds_up_neither_a_healthy_one_nor_the_slot() {
    let Running { db, sidecar, .. } = one_down_one_healthy("independent", true).await;
    db.wait_confirmed(
        "the position should move on: the failing webhook's backlog is in the spool",
        &sidecar,
    )
    .await;
    sidecar.wait_log("spooling").await;
    let spooled = db.spool_rows("down").await;
    assert!(spooled > 1000, "{spooled} rows spooled");
}

#[tokio::test]
async fn without_the_spool_a_failing_webhook_lags_and_holds_the_position() {
    let Running { db, sidecar, .. } = one_down_one_healthy("lagging", false).await;
    sidecar.wait_log("webhook is falling behind").await;
    assert!(
        !db.confirmed_past(&db.insert_lsn().await).await,
        "the failing webhook still holds the position"
    );
}

#[tokio::test]
async fn changes_of_one_lead_stay_in_order_while_different_leads_go_concurrently() {
    let Running {
        db,
        receiver,
        sidecar: _sidecar,
        ..
    } = Scenario::new("ordered").start(&leadhook()).await;
    receiver.set_responder(|_, _| Reply::ok().after(Duration::from_millis(fastrand::u64(0..15))));

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
    let Running {
        db,
        receiver,
        sidecar,
        ..
    } = Scenario::new("block")
        .webhook_with("hook", "/leads", |w| {
            w.delivery.on_exhausted = Some("block".into());
            w.delivery.max_attempts = Some(2);
            w.delivery.initial_backoff = Some(Duration::from_millis(50));
            w.delivery.max_backoff = Some(Duration::from_millis(300));
        })
        .start(&leadhook())
        .await;
    receiver.set_responder(|_, n| {
        if n <= 6 {
            Reply::status(500)
        } else {
            Reply::ok()
        }
    });

    db.sql
        .batch_execute("INSERT INTO leads (email) VALUES ('blocked@example.com')")
        .await
        .unwrap();
    let after = db.insert_lsn().await;
    receiver.wait_for("/leads", 4, WAIT).await.unwrap();
    assert!(!db.confirmed_past(&after).await, "held while blocked");
    receiver.wait_for("/leads", 7, WAIT).await.unwrap();
    eventually(
        "the position should move once delivered",
        || sidecar.log(),
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
    let key: Vec<u8> = (0..24).map(|_| fastrand::u8(..)).collect();
    let secret = format!("whsec_{}", STANDARD.encode(&key));
    let Running {
        db,
        receiver,
        sidecar,
        ..
    } = Scenario::new("signed")
        .webhook_with("hook", "/leads", |w| {
            w.secret = Some("${SIGNING_SECRET}".into());
        })
        .env("SIGNING_SECRET", &secret)
        .start(&leadhook())
        .await;

    db.sql
        .batch_execute(
            "INSERT INTO leads (email, notes) VALUES ('signed@example.com', 'ünïcode ✓')",
        )
        .await
        .unwrap();
    let got = receiver.wait_for("/leads", 1, WAIT).await.unwrap();
    assert_signed(&got[0], &key);
    assert!(
        !sidecar.log().contains(&secret[6..]),
        "the secret is never logged"
    );
}

#[tokio::test]
async fn a_sidecar_killed_during_retries_loses_nothing() {
    let Running {
        db,
        receiver,
        sidecar,
        ..
    } = Scenario::new("killretry")
        .webhook_with("hook", "/leads", |w| {
            w.delivery.initial_backoff = Some(Duration::from_millis(200));
        })
        .start(&leadhook())
        .await;
    let healthy = Arc::new(AtomicBool::new(false));
    let flag = healthy.clone();
    receiver.set_responder(move |_, _| {
        if flag.load(Ordering::SeqCst) {
            Reply::ok()
        } else {
            Reply::status(503)
        }
    });

    db.insert_leads_in_one_transaction(1..=50).await;
    // Every change tried once, and retries under way (one at a time: the
    // circuit opened).
    wait_or_diagnose(&receiver, "/leads", 52, &db, &sidecar).await;
    sidecar.kill();
    let recovered_at = SystemTime::now();
    healthy.store(true, Ordering::SeqCst);
    sidecar.restart();
    eventually(
        "all 50 changes should be delivered after the restart",
        || sidecar.log(),
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
async fn without_the_spool_a_slow_webhook_falls_behind_then_catches_up_even_through_one_large_transaction()
 {
    let Running {
        db,
        receiver,
        sidecar,
        ..
    } = Scenario::new("catchup")
        .webhook_with("slow", "/slow", |w| {
            w.delivery.timeout = Some(Duration::from_secs(5));
            w.delivery.spool = Some(false);
        })
        .webhook("fast", "/fast")
        .start(&leadhook())
        .await;
    // /slow answers its first 200 changes after 3 s each, so it frees no room
    // for longer than the 2 s a webhook may hold the others up; then it keeps
    // up. Slow, not failing: a failing endpoint's circuit would open and
    // answer for its changes quickly.
    receiver.set_responder(|request, n| {
        if request.path == "/slow" && n <= 200 {
            Reply::ok().after(Duration::from_secs(3))
        } else {
            Reply::ok()
        }
    });

    // One transaction, far larger than the slow webhook takes before it lags.
    db.insert_leads_in_one_transaction(1..=1500).await;
    let after = db.insert_lsn().await;
    wait_or_diagnose(&receiver, "/fast", 1500, &db, &sidecar).await;
    eventually(
        "the fast webhook should get every change",
        || sidecar.log(),
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
    wait_for_scores(&receiver, "/slow", 1500, &sidecar).await;
    eventually(
        "the position should move past the transaction",
        || sidecar.log(),
        async || db.confirmed_past(&after).await,
    )
    .await;
    let log = sidecar.log();
    assert!(
        log.contains("webhook is falling behind") && log.contains("caught up"),
        "{log}"
    );
}
