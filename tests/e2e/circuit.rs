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
    // What was sent before it opened is answered within 50 ms.
    tokio::time::sleep(Duration::from_millis(300)).await;
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
    receiver.set_responder(|_, n| {
        if n == 1 {
            Reply::status(429).with_header("Retry-After", "2")
        } else {
            Reply::ok()
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
    let got = wait_for_scores(&receiver, "/leads", 10, &sidecar).await;
    for request in &got[1..] {
        let after = request
            .received_at
            .duration_since(answered_at)
            .unwrap_or_default();
        assert!(
            after >= Duration::from_millis(1900),
            "a request came {after:?} after the 429, inside its Retry-After"
        );
    }
    eventually(
        "concurrency should grow back to max_in_flight",
        || sidecar.log(),
        async || concurrency().await == 4.0,
    )
    .await;
    assert!(sidecar.log().contains("sending less at once"));
}
