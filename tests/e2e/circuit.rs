//! A failing or overloaded endpoint: the circuit breaker (one probe at a
//! time while it is open) and adaptive concurrency (a 429's `Retry-After`
//! pauses the whole webhook, and it gets fewer requests at once).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::support::*;

async fn state_is(admin: &str, state: &str) -> bool {
    metric(
        admin,
        "leadhook_webhook_state",
        &[("webhook", "hook"), ("state", state)],
    )
    .await
        == 1.0
}

#[tokio::test]
async fn a_dead_endpoint_sees_one_request_at_a_time_once_its_circuit_opens() {
    let Running {
        db,
        receiver,
        sidecar,
        ..
    } = Scenario::new("circuit")
        .webhook_with("hook", "/leads", |w| {
            w.delivery.initial_backoff = Some(Duration::from_millis(100));
            w.delivery.max_backoff = Some(Duration::from_millis(400));
            w.delivery.max_attempts = Some(1000);
        })
        .start(&leadhook())
        .await;
    let healthy = Arc::new(AtomicBool::new(false));
    let up = healthy.clone();
    receiver.set_responder(move |_, _| {
        if up.load(Ordering::SeqCst) {
            Reply::ok()
        } else {
            Reply::status(500).after(Duration::from_millis(50))
        }
    });
    let admin = sidecar.admin_url().await;

    db.insert_leads_in_one_transaction(1..=40).await;
    eventually(
        "the circuit should open",
        || sidecar.log(),
        async || state_is(&admin, "open").await,
    )
    .await;
    // What was sent before it opened is answered within 50 ms; from then on
    // at most the probe is out.
    eventually(
        "the requests sent before the circuit opened should be answered",
        || sidecar.log(),
        async || receiver.in_flight() <= 1,
    )
    .await;
    receiver.reset_max_in_flight();
    let before = receiver.requests_to("/leads").len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let probes = receiver.requests_to("/leads").len() - before;
    assert!(
        receiver.max_in_flight() <= 1,
        "while the circuit is open, at most one request is in flight, not {}",
        receiver.max_in_flight()
    );
    assert!(probes >= 3, "the probe goes on, on its schedule: {probes}");

    healthy.store(true, Ordering::SeqCst);
    wait_for_scores(&receiver, "/leads", 40, &sidecar).await;
    eventually(
        "the webhook should be healthy again",
        || sidecar.log(),
        async || state_is(&admin, "healthy").await,
    )
    .await;
    let dead: i64 = db
        .sql
        .query_one("SELECT count(*) FROM leadhook.dead_letters", &[])
        .await
        .map_or(0, |row| row.get(0));
    assert_eq!(dead, 0, "nothing given up: attempts were left");
    let log = sidecar.log();
    assert!(
        log.contains("circuit open") && log.contains("circuit closed"),
        "state changes are logged: {log}"
    );
    assert_eq!(
        log.matches("circuit open").count(),
        1,
        "once, not per attempt"
    );
}

#[tokio::test]
async fn an_overloaded_endpoint_pauses_the_whole_webhook_for_its_retry_after_and_gets_less_at_once()
{
    let Running {
        db,
        receiver,
        sidecar,
        ..
    } = Scenario::new("overload")
        .webhook_with("hook", "/leads", |w| {
            w.delivery.max_in_flight = Some(4);
        })
        .start(&leadhook())
        .await;
    // The first request is told to come back in 3 s; the rest take 300 ms each.
    receiver.set_responder(|_, n| {
        if n == 1 {
            Reply::status(429).with_header("Retry-After", "3")
        } else {
            Reply::ok().after(Duration::from_millis(300))
        }
    });
    let admin = sidecar.admin_url().await;
    let concurrency = async || metric(&admin, "leadhook_concurrency", &[("webhook", "hook")]).await;
    assert_eq!(concurrency().await, 4.0);

    db.insert_leads(1..=1).await;
    let first = receiver.wait_for("/leads", 1, WAIT).await.unwrap();
    let answered_at = first[0].received_at;
    eventually(
        "concurrency should halve",
        || sidecar.log(),
        async || concurrency().await == 2.0,
    )
    .await;
    // Committed while the webhook is paused: they wait as well.
    db.insert_leads(2..=10).await;
    let committed = std::time::SystemTime::now()
        .duration_since(answered_at)
        .unwrap_or_default();
    assert!(
        committed < Duration::from_millis(2500),
        "the test committed too late ({committed:?}) to see the pause"
    );
    let got = wait_for_scores(&receiver, "/leads", 10, &sidecar).await;
    let after: Vec<Duration> = got[1..]
        .iter()
        .map(|r| {
            r.received_at
                .duration_since(answered_at)
                .unwrap_or_default()
        })
        .collect();
    assert!(
        after.iter().all(|a| *a >= Duration::from_millis(2900)),
        "every change waited out the 429's Retry-After: {after:?}"
    );
    // The pause over, at most 2 requests (the halved limit) go out at once:
    // each takes 300 ms, so the first 200 ms after the first one see ≤ 2.
    let first_after = after.iter().min().copied().unwrap_or_default();
    let burst = after
        .iter()
        .filter(|a| **a < first_after + Duration::from_millis(200))
        .count();
    assert!(burst <= 2, "{burst} requests at once after the pause");
    eventually(
        "concurrency should grow back to max_in_flight",
        || sidecar.log(),
        async || concurrency().await == 4.0,
    )
    .await;
    assert!(sidecar.log().contains("sending less at once"));
}

#[tokio::test]
async fn a_lead_the_endpoint_keeps_failing_opens_no_circuit_and_holds_up_no_other_lead() {
    let Running {
        db,
        receiver,
        sidecar,
        ..
    } = Scenario::new("poison")
        .webhook_with("hook", "/leads", |w| {
            w.delivery.initial_backoff = Some(Duration::from_millis(50));
            w.delivery.max_backoff = Some(Duration::from_millis(100));
            w.delivery.max_attempts = Some(10_000);
        })
        .start(&leadhook())
        .await;
    // Lead 1's payload is one this endpoint always fails on.
    receiver.set_responder(|request, _| {
        if data(request)["score"] == 1 {
            Reply::status(500)
        } else {
            Reply::ok()
        }
    });
    let admin = sidecar.admin_url().await;

    db.insert_leads(1..=1).await;
    receiver.wait_for("/leads", 8, WAIT).await.unwrap();
    db.insert_leads(2..=20).await;
    wait_for_these_scores(&receiver, "/leads", 2..=20, &sidecar).await;
    assert!(
        !state_is(&admin, "open").await,
        "one failing change opens no circuit"
    );
    assert!(!sidecar.log().contains("circuit open"), "{}", sidecar.log());
}
