//! `http2` per webhook against real receivers: over TLS, `auto` and
//! `always` speak HTTP/2 (negotiated by ALPN, or assumed) and `never`
//! HTTP/1.1; over plain `http://`, `always` speaks HTTP/2 with prior
//! knowledge (h2c) and `auto` stays on HTTP/1.1. Every lead arrives at each,
//! also through refusals, timed-out streams and a restarted receiver; and
//! a server that rotates its connections with GOAWAY costs no failed attempt.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http2_refusals_timeouts_and_a_restarted_receiver_lose_no_lead() {
    let mut receiver = Receiver::start(0).await.expect("a receiver");
    // Every 5th request refused, every 7th answered too late; the rest at once.
    receiver.set_responder(|_, n| match n {
        n if n % 5 == 4 => Reply::status(503),
        n if n % 7 == 6 => Reply::ok().after(Duration::from_secs(3)),
        _ => Reply::ok(),
    });
    let db = TestDb::create(shared_cluster(), "http2_failures").await;
    let hook = webhook(&receiver, "always")
        .header("Authorization", "Bearer h2-t0ken")
        // HTTP/1.1's own header: not sent over HTTP/2, which forbids it.
        .header("Connection", "keep-alive")
        .with(|w| {
            w.delivery.timeout = Some(Duration::from_millis(500));
            w.delivery.initial_backoff = Some(Duration::from_millis(50));
        });
    let sidecar = leadhook().start(&db.config().webhook(hook).to_toml());
    db.wait_streaming(&sidecar).await;
    db.insert_leads(1..=15).await;
    wait_for_these_scores(&receiver, "/always", 1..=15, &sidecar).await;

    // The server closes the shared connection: a new one carries the rest.
    receiver.stop().await;
    receiver.start_again().await.expect("the receiver restarts");
    db.insert_leads(16..=30).await;
    wait_for_these_scores(&receiver, "/always", 1..=30, &sidecar).await;

    let requests = receiver.requests_to("/always");
    assert_eq!(
        versions(&receiver, "/always"),
        ["HTTP/2.0".to_owned()].into()
    );
    for request in &requests {
        assert_eq!(request.header("authorization"), Some("Bearer h2-t0ken"));
        assert_eq!(request.header("connection"), None);
        let length = request.header("content-length").map(str::parse::<usize>);
        assert_eq!(length, Some(Ok(request.body.len())));
    }
    let retried = requests.len() - 30;
    assert!(
        retried >= 6,
        "{retried} retries for 30 leads: {}",
        sidecar.log()
    );
    assert!(!sidecar.log().contains("h2-t0ken"), "{}", sidecar.log());
}

/// An HTTP/2 server (h2c) that answers 200 to everything and closes each
/// connection gracefully with GOAWAY after `per_connection` requests, as
/// servers that rotate connections do (nginx: every 1 000 requests).
struct RotatingServer {
    url: String,
    /// The score of every lead it received, repeats included.
    scores: Arc<Mutex<Vec<i64>>>,
    connections: Arc<AtomicUsize>,
}

impl RotatingServer {
    async fn start(per_connection: usize) -> RotatingServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a local port");
        let url = format!("http://{}/leads", listener.local_addr().expect("bound"));
        let scores = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let (received, opened) = (Arc::clone(&scores), Arc::clone(&connections));
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                opened.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(serve_then_go_away(
                    tcp,
                    per_connection,
                    Arc::clone(&received),
                ));
            }
        });
        RotatingServer {
            url,
            scores,
            connections,
        }
    }

    fn scores(&self) -> BTreeSet<i64> {
        self.scores
            .lock()
            .expect("scores")
            .iter()
            .copied()
            .collect()
    }
}

async fn serve_then_go_away(tcp: TcpStream, per_connection: usize, scores: Arc<Mutex<Vec<i64>>>) {
    let Ok(mut connection) = h2::server::handshake(tcp).await else {
        return;
    };
    let mut served = 0;
    while let Some(Ok((request, mut respond))) = connection.accept().await {
        let scores = Arc::clone(&scores);
        tokio::spawn(async move {
            let mut body = request.into_body();
            let mut bytes = Vec::new();
            while let Some(Ok(chunk)) = body.data().await {
                let _ = body.flow_control().release_capacity(chunk.len());
                bytes.extend_from_slice(&chunk);
            }
            let lead: serde_json::Value = serde_json::from_slice(&bytes).expect("a JSON payload");
            let score = lead["data"]["score"].as_i64().expect("a score");
            scores.lock().expect("scores").push(score);
            let _ = respond.send_response(http::Response::new(()), true);
        });
        served += 1;
        if served == per_connection {
            connection.graceful_shutdown();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_a_server_turns_away_with_goaway_go_out_again_on_a_new_connection_without_a_failed_attempt()
 {
    let server = RotatingServer::start(5).await;
    let db = TestDb::create(shared_cluster(), "http2_goaway").await;
    // At most 4 streams at once: no connection can take all 60 before it
    // says GOAWAY, so requests are turned away and must go out again.
    let hook = Webhook::new("hook", server.url.clone()).with(|w| {
        w.http2 = Some("always".into());
        w.delivery.max_in_flight = Some(4);
    });
    let sidecar = leadhook().start(&db.config().webhook(hook).to_toml());
    db.wait_streaming(&sidecar).await;
    db.insert_leads(1..=60).await;
    eventually(
        "every lead at the rotating server",
        || sidecar.log(),
        async || server.scores() == (1..=60).collect(),
    )
    .await;
    let connections = server.connections.load(Ordering::Relaxed);
    // Each serves the streams open when it said GOAWAY: more than 5.
    assert!(
        connections >= 2,
        "{connections} connection(s) for 60 requests"
    );
    assert_eq!(failed_attempts(&sidecar).await, 0.0, "{}", sidecar.log());
}
