//! A recording webhook receiver on 127.0.0.1.
//!
//! `leadhook demo` prints each delivered webhook from [`Receiver::subscribe`];
//! tests assert on [`Receiver::requests`] and script failing, slow or down
//! receivers with [`Receiver::set_responder`] and [`Receiver::stop`]; the
//! benchmark needs it fast, so it never logs per request and records with one
//! clone under a short lock.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

/// Larger bodies get 413; webhooks are far smaller.
const MAX_BODY: usize = 16 * 1024 * 1024;
/// Requests a slow [`Receiver::subscribe`] reader may fall behind before it
/// sees `Lagged`.
const FEED_CAPACITY: usize = 4096;
const LISTEN_BACKLOG: u32 = 1024;
/// How long [`Receiver::stop`] waits for killed connections to close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// One request as it arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedRequest {
    /// Uppercase, e.g. "POST".
    pub method: String,
    /// The URI path, without the query string.
    pub path: String,
    /// Lowercased names, in the order the server parsed them; repeated
    /// headers appear once per value.
    pub headers: Vec<(String, String)>,
    /// Exactly as sent (Bytes: cloning a record does not copy it).
    pub body: Bytes,
    /// When the body had been read, for latency and ordering checks.
    pub received_at: SystemTime,
}

impl ReceivedRequest {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(header, _)| header.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// How to answer one request. The body is always empty: small replies keep
/// the receiver fast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Any code 100..=999; others become a 500 that says so.
    pub status: u16,
    /// Held before answering; the request counts as in flight meanwhile.
    pub delay: Duration,
    /// Extra response headers, e.g. `retry-after`.
    pub headers: Vec<(String, String)>,
}

impl Reply {
    /// 200, at once.
    pub fn ok() -> Reply {
        Reply::status(200)
    }

    /// `status`, at once.
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            delay: Duration::ZERO,
            headers: Vec::new(),
        }
    }

    /// The same reply, sent after `delay`.
    pub fn after(self, delay: Duration) -> Reply {
        Reply { delay, ..self }
    }

    /// The same reply with one more header, e.g. `retry-after`.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }
}

impl Default for Reply {
    fn default() -> Reply {
        Reply::ok()
    }
}

/// [`Receiver::wait_for`] gave up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{arrived} of {wanted} expected request(s) to {path} arrived within {timeout:?}; check that \
     the sender posts to this receiver's url() and is running, or wait longer"
)]
pub struct WaitError {
    /// The path that was waited on.
    pub path: String,
    /// How many requests were waited for.
    pub wanted: usize,
    /// How many had arrived when time ran out.
    pub arrived: usize,
    /// How long was waited.
    pub timeout: Duration,
}

type Responder = dyn Fn(&ReceivedRequest, u64) -> Reply + Send + Sync;

/// State the serving tasks share with the [`Receiver`]; it outlives
/// stop/start_again so records and responder carry over.
struct Shared {
    /// Everything received, in arrival order.
    log: Mutex<Log>,
    /// Bumped on every arrival so `wait_for` sleeps instead of polling.
    arrivals: watch::Sender<u64>,
    responder: RwLock<Arc<Responder>>,
    /// The live feed; sent to only when someone subscribed.
    feed: broadcast::Sender<ReceivedRequest>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    /// Bumped by stop: connections accepted under an older generation fail
    /// all I/O, and delayed replies stop waiting.
    generation: watch::Sender<u64>,
    /// Open connections, so stop can wait until every one is closed.
    connections: watch::Sender<usize>,
}

#[derive(Default)]
struct Log {
    requests: Vec<ReceivedRequest>,
    /// Arrivals per path: the responder's 1-based number and `wait_for`'s count.
    per_path: HashMap<String, u64>,
}

impl Shared {
    fn new() -> Shared {
        Shared {
            log: Mutex::new(Log::default()),
            arrivals: watch::Sender::new(0),
            responder: RwLock::new(Arc::new(|_: &ReceivedRequest, _: u64| Reply::ok())),
            feed: broadcast::Sender::new(FEED_CAPACITY),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            generation: watch::Sender::new(0),
            connections: watch::Sender::new(0),
        }
    }

    fn log(&self) -> MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stores the request; returns its 1-based arrival number for its path.
    fn record(&self, request: &ReceivedRequest) -> u64 {
        let arrival = {
            let mut log = self.log();
            log.requests.push(request.clone());
            let count = log.per_path.entry(request.path.clone()).or_insert(0);
            *count += 1;
            *count
        };
        self.arrivals.send_modify(|total| *total += 1);
        arrival
    }

    fn count_to(&self, path: &str) -> usize {
        let count = self.log().per_path.get(path).copied().unwrap_or(0);
        usize::try_from(count).unwrap_or(usize::MAX)
    }

    fn responder(&self) -> Arc<Responder> {
        let responder = self
            .responder
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        Arc::clone(&responder)
    }

    /// Ends every connection and delayed reply of the current generation.
    fn cut_connections(&self) {
        self.generation.send_modify(|generation| *generation += 1);
    }
}

/// Counts a request as in flight while alive, including the reply delay.
struct InFlight<'a>(&'a Shared);

impl<'a> InFlight<'a> {
    fn enter(shared: &'a Shared) -> InFlight<'a> {
        let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        shared.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(shared)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A webhook receiver serving HTTP/1.1 on 127.0.0.1 that records every request.
pub struct Receiver {
    shared: Arc<Shared>,
    /// Kept so `start_again` rebinds exactly this port.
    addr: SocketAddr,
    /// The accept loop while up; None while stopped.
    server: Option<JoinHandle<()>>,
}

impl fmt::Debug for Receiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver")
            .field("addr", &self.addr)
            .field("running", &self.server.is_some())
            .finish_non_exhaustive()
    }
}

impl Receiver {
    /// Binds 127.0.0.1:`port` (0 picks a free one) and serves. Every request
    /// is recorded, then answered by the responder (default: 200 OK).
    pub async fn start(port: u16) -> io::Result<Receiver> {
        let listener = bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))?;
        let mut receiver = Receiver {
            shared: Arc::new(Shared::new()),
            addr: listener.local_addr()?,
            server: None,
        };
        receiver.serve(listener);
        Ok(receiver)
    }

    /// Decides the reply to each request from the request and its 1-based
    /// arrival number at that path (e.g. "fail the first two, then 200").
    pub fn set_responder(
        &self,
        f: impl Fn(&ReceivedRequest, u64) -> Reply + Send + Sync + 'static,
    ) {
        let mut responder = self
            .shared
            .responder
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        *responder = Arc::new(f);
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/path` (a missing leading '/' is added).
    pub fn url(&self, path: &str) -> String {
        let slash = if path.starts_with('/') { "" } else { "/" };
        format!("http://{}{slash}{path}", self.addr)
    }

    /// Every request so far, all paths, in arrival order.
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        self.shared.log().requests.clone()
    }

    /// The requests so far to `path`, in arrival order.
    pub fn requests_to(&self, path: &str) -> Vec<ReceivedRequest> {
        let log = self.shared.log();
        log.requests
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// Waits until at least `n` requests have arrived at `path`, then returns
    /// all requests to it; on timeout the error says how many arrived.
    pub async fn wait_for(
        &self,
        path: &str,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<ReceivedRequest>, WaitError> {
        let deadline = tokio::time::Instant::now() + timeout;
        // Subscribing before counting means no arrival slips between the two.
        let mut arrivals = self.shared.arrivals.subscribe();
        loop {
            let arrived = self.shared.count_to(path);
            if arrived >= n {
                return Ok(self.requests_to(path));
            }
            let changed = tokio::time::timeout_at(deadline, arrivals.changed()).await;
            if !matches!(changed, Ok(Ok(()))) {
                return Err(WaitError {
                    path: path.to_owned(),
                    wanted: n,
                    arrived: self.shared.count_to(path),
                    timeout,
                });
            }
        }
    }

    /// A live feed of every request as it arrives, for printing; a reader
    /// more than a few thousand requests behind gets `Lagged`.
    pub fn subscribe(&self) -> broadcast::Receiver<ReceivedRequest> {
        self.shared.feed.subscribe()
    }

    /// "Receiver down": stops accepting and closes every open connection,
    /// idle or mid-request, so clients see connection errors. Records and
    /// responder stay for [`Self::start_again`].
    pub async fn stop(&mut self) {
        let Some(server) = self.server.take() else {
            return;
        };
        self.shared.cut_connections();
        server.abort();
        let _ = server.await;
        let mut open = self.shared.connections.subscribe();
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, open.wait_for(|open| *open == 0)).await;
    }

    /// "Receiver back up": serves again on the same port. Does nothing if running.
    pub async fn start_again(&mut self) -> io::Result<()> {
        if self.server.is_none() {
            self.serve(bind(self.addr)?);
        }
        Ok(())
    }

    /// The most requests that were in progress at once (delays included).
    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }

    fn serve(&mut self, listener: TcpListener) {
        let listener = KillableListener {
            inner: listener,
            generation: *self.shared.generation.borrow(),
            shared: Arc::clone(&self.shared),
        };
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&self.shared));
        self.server = Some(tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        }));
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.shared.cut_connections();
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

/// SO_REUSEADDR, so `start_again` can rebind while old connections sit in TIME_WAIT.
fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// The one handler, for every method and path.
async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let _in_flight = InFlight::enter(&shared);
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(body) => body,
        Err(_) => return StatusCode::PAYLOAD_TOO_LARGE.into_response(),
    };
    let request = ReceivedRequest {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        headers: parts
            .headers
            .iter()
            .map(|(name, value)| {
                let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                (name.as_str().to_owned(), value)
            })
            .collect(),
        body,
        received_at: SystemTime::now(),
    };
    let arrival = shared.record(&request);
    let reply = shared.responder()(&request, arrival);
    if shared.feed.receiver_count() > 0 {
        let _ = shared.feed.send(request);
    }
    if !reply.delay.is_zero() {
        // Subscribed now, so a stop during the delay ends it at once.
        let mut stopped = shared.generation.subscribe();
        tokio::select! {
            () = tokio::time::sleep(reply.delay) => {}
            _ = stopped.changed() => {}
        }
    }
    build_response(&reply)
}

/// A bad status or header from the responder becomes a 500 that says so.
fn build_response(reply: &Reply) -> Response {
    let Ok(status) = StatusCode::from_u16(reply.status) else {
        let message = format!("responder returned invalid status {}", reply.status);
        return (StatusCode::INTERNAL_SERVER_ERROR, message).into_response();
    };
    let mut response = Response::new(Body::empty());
    *response.status_mut() = status;
    for (name, value) in &reply.headers {
        let parsed = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        );
        let (Ok(name), Ok(value)) = parsed else {
            let message = format!("responder returned invalid header {name:?}: {value:?}");
            return (StatusCode::INTERNAL_SERVER_ERROR, message).into_response();
        };
        response.headers_mut().append(name, value);
    }
    response
}

/// Accepts like a TcpListener, with TCP_NODELAY and a kill switch per connection.
struct KillableListener {
    inner: TcpListener,
    /// Connections accepted now die when the generation moves on.
    generation: u64,
    shared: Arc<Shared>,
}

impl axum::serve::Listener for KillableListener {
    type Io = Connection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Connection, SocketAddr) {
        let (stream, addr) = axum::serve::Listener::accept(&mut self.inner).await;
        // Without it, a response written in two segments stalls ~40 ms
        // (Nagle + delayed ACK) per keep-alive request. A failure only costs speed.
        let _ = stream.set_nodelay(true);
        (Connection::new(stream, &self.shared, self.generation), addr)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// A TcpStream whose I/O fails once the receiver is stopped, so hyper drops
/// idle keep-alive connections too, which a plain abort would leave open.
struct Connection {
    stream: TcpStream,
    /// Resolves when the receiver is stopped or dropped.
    stopped: Pin<Box<dyn Future<Output = ()> + Send>>,
    /// `stopped` has resolved (a finished future must not be polled again).
    dead: bool,
    /// For the open-connection count.
    shared: Arc<Shared>,
}

impl Connection {
    fn new(stream: TcpStream, shared: &Arc<Shared>, generation: u64) -> Connection {
        shared.connections.send_modify(|open| *open += 1);
        let mut generations = shared.generation.subscribe();
        let stopped = Box::pin(async move {
            let _ = generations.wait_for(|now| *now != generation).await;
        });
        Connection {
            stream,
            stopped,
            dead: false,
            shared: Arc::clone(shared),
        }
    }

    /// Err once stopped; otherwise registers the waker for the stop.
    fn check_alive(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if !self.dead && self.stopped.as_mut().poll(cx).is_ready() {
            self.dead = true;
        }
        if self.dead {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "webhook receiver stopped",
            ));
        }
        Ok(())
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.shared.connections.send_modify(|open| *open -= 1);
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Err(error) = this.check_alive(cx) {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Err(error) = this.check_alive(cx) {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut this.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Err(error) = this.check_alive(cx) {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut this.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Err(error) = this.check_alive(cx) {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut this.stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error;
    use std::time::Instant;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    type TestResult = Result<(), Box<dyn Error>>;

    const PATIENCE: Duration = Duration::from_secs(5);

    /// reqwest needs the process-wide rustls provider the sidecar installs.
    fn http_client() -> reqwest::Client {
        crate::database::install_crypto_provider();
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
    async fn stop_refuses_connections_and_start_again_serves_the_same_port_and_records()
    -> TestResult {
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
            shared: Arc::new(Shared::new()),
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
}
