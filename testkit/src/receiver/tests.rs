use super::*;
use bytes::Bytes;
use std::error::Error;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

type TestResult = Result<(), Box<dyn Error>>;

const PATIENCE: Duration = Duration::from_secs(5);

/// reqwest needs the process-wide rustls provider the sidecar installs.
fn http_client() -> reqwest::Client {
    crate::install_crypto_provider();
    reqwest::Client::new()
}

#[tokio::test]
async fn it_records_method_path_headers_and_body() -> TestResult {
    let receiver = Receiver::start(0).await?;
    let before = SystemTime::now();
    let response = http_client()
        .post(receiver.url("/hooks/lead?attempt=1"))
        .header("Content-Type", "application/json")
        .header("X-Leadhook-Signature", "sig")
        .body(r#"{"id":1}"#)
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    let [request] = receiver
        .requests()
        .try_into()
        .map_err(|r| format!("{r:?}"))?;
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/hooks/lead");
    assert_eq!(request.header("x-leadhook-signature"), Some("sig"));
    assert_eq!(request.header("Content-Type"), Some("application/json"));
    assert!(
        request
            .headers
            .iter()
            .all(|(name, _)| *name == name.to_lowercase())
    );
    assert_eq!(request.body, Bytes::from_static(br#"{"id":1}"#));
    assert!(request.received_at >= before);
    assert_eq!(receiver.requests_to("/hooks/lead"), vec![request]);
    assert!(receiver.requests_to("/elsewhere").is_empty());
    Ok(())
}

#[tokio::test]
async fn the_responder_sets_status_headers_and_delay_per_arrival() -> TestResult {
    let receiver = Receiver::start(0).await?;
    receiver.set_responder(|_, arrival| match arrival {
        1 => Reply::status(503).with_header("retry-after", "1"),
        _ => Reply::ok().after(Duration::from_millis(200)),
    });
    let client = http_client();
    let first = client.post(receiver.url("/flaky")).send().await?;
    assert_eq!(first.status(), 503);
    assert_eq!(
        first.headers().get("retry-after").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
    let started = Instant::now();
    let second = client.post(receiver.url("/flaky")).send().await?;
    assert_eq!(second.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(
        receiver.requests_to("/flaky").len(),
        2,
        "failed requests are recorded too"
    );
    Ok(())
}

#[tokio::test]
async fn stop_refuses_connections_and_start_again_serves_the_same_port_and_records() -> TestResult {
    let mut receiver = Receiver::start(0).await?;
    let client = http_client();
    client.post(receiver.url("/hook")).send().await?;
    let addr = receiver.addr();

    receiver.stop().await;
    let pooled = client.post(receiver.url("/hook")).send().await;
    assert!(pooled.is_err(), "keep-alive client still got {pooled:?}");
    let fresh = http_client().post(receiver.url("/hook")).send().await;
    assert!(fresh.is_err_and(|error| error.is_connect()));

    receiver.start_again().await?;
    assert_eq!(receiver.addr(), addr);
    let response = client.post(receiver.url("/hook")).send().await?;
    assert_eq!(response.status(), 200);
    assert_eq!(receiver.requests_to("/hook").len(), 2);
    Ok(())
}

#[tokio::test]
async fn stop_closes_idle_keep_alive_connections() -> TestResult {
    let mut receiver = Receiver::start(0).await?;
    let mut stream = TcpStream::connect(receiver.addr()).await?;
    stream
        .write_all(b"GET /idle HTTP/1.1\r\nhost: test\r\n\r\n")
        .await?;
    let mut buffer = [0; 1024];
    let read = stream.read(&mut buffer).await?;
    assert!(buffer[..read].starts_with(b"HTTP/1.1 200"));

    receiver.stop().await;
    let after_stop = tokio::time::timeout(PATIENCE, stream.read(&mut buffer)).await?;
    assert!(
        matches!(after_stop, Ok(0) | Err(_)),
        "connection still open: {after_stop:?}"
    );
    Ok(())
}

#[tokio::test]
async fn stop_cuts_off_a_reply_still_being_delayed() -> TestResult {
    let mut receiver = Receiver::start(0).await?;
    receiver.set_responder(|_, _| Reply::ok().after(Duration::from_secs(60)));
    let url = receiver.url("/slow");
    let request = tokio::spawn(async move { http_client().post(url).send().await });
    receiver.wait_for("/slow", 1, PATIENCE).await?;
    receiver.stop().await;
    let outcome = tokio::time::timeout(PATIENCE, request).await??;
    assert!(outcome.is_err(), "the client got a reply: {outcome:?}");
    Ok(())
}

#[tokio::test]
async fn wait_for_times_out_saying_how_many_arrived() -> TestResult {
    let receiver = Receiver::start(0).await?;
    http_client().post(receiver.url("/hook")).send().await?;
    let waited = receiver
        .wait_for("/hook", 3, Duration::from_millis(100))
        .await;
    let error = waited.err().ok_or("wait_for should have timed out")?;
    assert_eq!((error.wanted, error.arrived), (3, 1));
    assert!(
        error
            .to_string()
            .starts_with("1 of 3 expected request(s) to /hook")
    );
    Ok(())
}

#[tokio::test]
async fn concurrent_slow_requests_count_as_in_flight_together() -> TestResult {
    let receiver = Receiver::start(0).await?;
    receiver.set_responder(|_, _| Reply::ok().after(Duration::from_millis(300)));
    let client = http_client();
    let (a, b) = tokio::join!(
        client.post(receiver.url("/a")).send(),
        client.post(receiver.url("/b")).send()
    );
    assert_eq!((a?.status().as_u16(), b?.status().as_u16()), (200, 200));
    assert_eq!(receiver.max_in_flight(), 2);
    Ok(())
}

#[tokio::test]
async fn subscribers_see_each_request_as_it_arrives() -> TestResult {
    let receiver = Receiver::start(0).await?;
    let mut feed = receiver.subscribe();
    http_client()
        .put(receiver.url("live"))
        .body("x")
        .send()
        .await?;
    let request = tokio::time::timeout(PATIENCE, feed.recv()).await??;
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("PUT", "/live")
    );
    Ok(())
}

#[tokio::test]
async fn accepted_connections_have_nodelay_set() -> TestResult {
    let inner = bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
    let addr = inner.local_addr()?;
    let mut listener = KillableListener {
        inner,
        generation: 0,
        shared: Arc::new(Shared::new(true)),
    };
    let _client = TcpStream::connect(addr).await?;
    let (connection, _) = axum::serve::Listener::accept(&mut listener).await;
    assert!(connection.stream.nodelay()?);
    Ok(())
}

#[test]
fn an_invalid_reply_becomes_a_500_that_says_why() {
    let response = build_response(&Reply::ok().with_header("bad header", "x"));
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(build_response(&Reply::status(42)).status(), 500);
}
