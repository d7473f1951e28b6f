//! How requests reach a webhook: each webhook's own connections (kept
//! between deliveries, dropped when the server closes them or answers too
//! much to read), credentials in the URL, and a proxy from the environment.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::support::*;

#[tokio::test]
async fn a_receiver_restarted_between_deliveries_gets_the_next_change_without_a_failed_attempt() {
    let Running {
        db,
        mut receiver,
        sidecar,
        ..
    } = Scenario::new("transport_restart").start(&leadhook()).await;
    db.insert_leads(1..=3).await;
    wait_for_these_scores(&receiver, "/leads", 1..=3, &sidecar).await;

    // Its kept connections are closed by the server now, and must be
    // found closed before a request is written to one.
    receiver.stop().await;
    receiver
        .start_again()
        .await
        .expect("the receiver starts again");
    db.insert_leads(4..=6).await;
    wait_for_these_scores(&receiver, "/leads", 1..=6, &sidecar).await;
    assert_eq!(failed_attempts(&sidecar).await, 0.0, "{}", sidecar.log());
}

#[tokio::test]
async fn answers_with_large_bodies_are_read_past_and_every_change_arrives() {
    let Running {
        db,
        receiver,
        sidecar,
        ..
    } = Scenario::new("transport_big_answer")
        .start(&leadhook())
        .await;
    // Bodies past what is read to keep a connection (64 KiB) close it;
    // small ones are read, so it serves the next request.
    receiver.set_responder(|_, n| match n % 2 {
        0 => Reply::ok().with_body(vec![b'x'; 1 << 20]),
        _ => Reply::ok().with_body("accepted"),
    });
    db.insert_leads(1..=40).await;
    wait_for_these_scores(&receiver, "/leads", 1..=40, &sidecar).await;
    assert_eq!(failed_attempts(&sidecar).await, 0.0, "{}", sidecar.log());
}

#[tokio::test]
async fn credentials_in_a_webhook_url_are_sent_as_basic_authentication_and_never_logged() {
    let Running {
        db,
        receiver,
        sidecar,
        ..
    } = Scenario::new("transport_credentials")
        .webhook_with("hook", "/leads", |w| {
            w.url = w.url.replacen("http://", "http://partner:s%3Acret@", 1);
        })
        .start(&leadhook())
        .await;
    db.insert_leads(1..=2).await;
    wait_for_these_scores(&receiver, "/leads", 1..=2, &sidecar).await;
    let expected = format!("Basic {}", STANDARD.encode("partner:s:cret"));
    for request in receiver.requests_to("/leads") {
        assert_eq!(request.header("authorization"), Some(expected.as_str()));
    }
    let log = sidecar.log();
    assert!(!log.contains("cret"), "the password is not logged: {log}");
}

#[tokio::test]
async fn a_proxy_named_by_the_environment_carries_requests_to_a_host_only_it_can_reach() {
    let proxy = Receiver::start(0)
        .await
        .expect("a receiver standing in for a proxy");
    let proxy_url = proxy.url("");
    let Running { db, sidecar, .. } = Scenario::new("transport_proxy")
        .webhook_with("hook", "/leads", |w| {
            // Resolvable by nobody (.invalid): only the proxy gets it there.
            w.url = "http://leads.partner.invalid/via-proxy".to_owned();
        })
        .env("HTTP_PROXY", &proxy_url)
        .env("NO_PROXY", "")
        .start(&leadhook())
        .await;
    db.insert_leads(1..=3).await;
    wait_for_these_scores(&proxy, "/via-proxy", 1..=3, &sidecar).await;
    for request in proxy.requests_to("/via-proxy") {
        assert_eq!(request.header("host"), Some("leads.partner.invalid"));
    }
}
