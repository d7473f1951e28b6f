//! `http2` per webhook against real receivers: over TLS, `auto` and
//! `always` speak HTTP/2 (negotiated by ALPN, or assumed) and `never`
//! HTTP/1.1; over plain `http://`, `always` speaks HTTP/2 with prior
//! knowledge (h2c) and `auto` stays on HTTP/1.1. Every lead arrives at each.

use std::collections::BTreeSet;

use leadhook_testkit::pki::Pki;

use crate::support::*;

/// The HTTP versions the requests to `path` came in.
fn versions(receiver: &Receiver, path: &str) -> BTreeSet<String> {
    receiver
        .requests_to(path)
        .iter()
        .map(|r| r.version.clone())
        .collect()
}

fn webhook(receiver: &Receiver, policy: &str) -> Webhook {
    Webhook::to(receiver, policy, &format!("/{policy}")).with(|w| w.http2 = Some(policy.to_owned()))
}

/// Starts the sidecar on `db` with one webhook per policy at `receiver`,
/// trusting `ca` (if any), and delivers 30 leads to each.
async fn deliver_with_each_policy(db: &TestDb, receiver: &Receiver, ca: Option<&Pki>) {
    let mut config = db.config();
    for policy in ["auto", "always", "never"] {
        config = config.webhook(webhook(receiver, policy));
    }
    let trust = ca.map(|pki| pki.path("ca.pem").display().to_string());
    let env: Vec<(&str, &str)> = trust
        .iter()
        .map(|path| ("SSL_CERT_FILE", path.as_str()))
        .collect();
    let sidecar = leadhook().start_with_env(&config.to_toml(), &env);
    db.wait_streaming(&sidecar).await;
    db.insert_leads(1..=30).await;
    for policy in ["auto", "always", "never"] {
        wait_for_these_scores(receiver, &format!("/{policy}"), 1..=30, &sidecar).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_auto_and_always_speak_http2_and_never_speaks_http1() {
    install_crypto_provider();
    let pki = Pki::new();
    let receiver = Receiver::start_tls(0, &pki).await.expect("a TLS receiver");
    let db = TestDb::create(shared_cluster(), "http2_tls").await;
    deliver_with_each_policy(&db, &receiver, Some(&pki)).await;
    assert_eq!(versions(&receiver, "/auto"), ["HTTP/2.0".to_owned()].into());
    assert_eq!(
        versions(&receiver, "/always"),
        ["HTTP/2.0".to_owned()].into()
    );
    assert_eq!(
        versions(&receiver, "/never"),
        ["HTTP/1.1".to_owned()].into()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_plain_http_always_speaks_h2c_and_auto_stays_on_http1() {
    let receiver = Receiver::start(0).await.expect("a receiver");
    let db = TestDb::create(shared_cluster(), "http2_plain").await;
    deliver_with_each_policy(&db, &receiver, None).await;
    assert_eq!(versions(&receiver, "/auto"), ["HTTP/1.1".to_owned()].into());
    assert_eq!(
        versions(&receiver, "/always"),
        ["HTTP/2.0".to_owned()].into()
    );
    assert_eq!(
        versions(&receiver, "/never"),
        ["HTTP/1.1".to_owned()].into()
    );
}
