//! A recording webhook receiver on 127.0.0.1.
//!
//! `leadhook demo` prints each delivered webhook from [`Receiver::subscribe`];
//! tests assert on [`Receiver::requests`] and script failing, slow or down
//! receivers with [`Receiver::set_responder`] and [`Receiver::stop`]; the
//! benchmark needs it fast and small, so it never logs per request, records
//! with one clone under a short lock, and [`Receiver::counting`] keeps counts
//! only.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

mod connection;
mod records;
use connection::KillableListener;
pub use records::{ReceivedRequest, Reply, WaitError};

/// Larger bodies get 413; webhooks are far smaller.
const MAX_BODY: usize = 16 * 1024 * 1024;
/// Requests a slow [`Receiver::subscribe`] reader may fall behind before it
/// sees `Lagged`.
const FEED_CAPACITY: usize = 4096;
const LISTEN_BACKLOG: u32 = 1024;
/// How long [`Receiver::stop`] waits for killed connections to close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Every receiver of the process serves on this runtime, not on its
/// caller's: a test that parses a hundred thousand requests on its own
/// (single-threaded) runtime would otherwise stall the receiver into the
/// sidecar's timeouts, and fail for a reason that is not the sidecar's.
static SERVING: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("receiver")
        .enable_all()
        .build()
        .expect("the receivers' runtime starts (threads and an epoll instance)")
});

type Responder = dyn Fn(&ReceivedRequest, u64) -> Reply + Send + Sync;

/// State the serving tasks share with the [`Receiver`]; it outlives
/// stop/start_again so records and responder carry over.
pub(crate) struct Shared {
    /// Everything received, in arrival order.
    log: Mutex<Log>,
    /// False for [`Receiver::counting`]: a benchmark's million requests are
    /// counted, not kept.
    keep_requests: bool,
    /// While true, requests wait before they are read ([`Receiver::pause`]).
    paused: watch::Sender<bool>,
    /// Bumped on every arrival so `wait_for` sleeps instead of polling.
    arrivals: watch::Sender<u64>,
    responder: RwLock<Arc<Responder>>,
    /// The live feed; sent to only when someone subscribed.
    feed: broadcast::Sender<ReceivedRequest>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    /// Bumped by stop: connections accepted under an older generation fail
    /// all I/O, and delayed replies stop waiting.
    pub(crate) generation: watch::Sender<u64>,
    /// Open connections, so stop can wait until every one is closed.
    pub(crate) connections: watch::Sender<usize>,
}

#[derive(Default)]
struct Log {
    requests: Vec<ReceivedRequest>,
    /// Arrivals per path: the responder's 1-based number and `wait_for`'s count.
    per_path: HashMap<String, u64>,
}

impl Shared {
    fn new(keep_requests: bool) -> Shared {
        Shared {
            log: Mutex::new(Log::default()),
            keep_requests,
            paused: watch::Sender::new(false),
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
            if self.keep_requests {
                log.requests.push(request.clone());
            }
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

/// A webhook receiver on 127.0.0.1 that records every request: HTTP/1.1,
/// and HTTP/2 with prior knowledge; or over TLS ([`Receiver::start_tls`]),
/// offering h2 and http/1.1 by ALPN.
pub struct Receiver {
    shared: Arc<Shared>,
    /// Kept so `start_again` rebinds exactly this port.
    addr: SocketAddr,
    /// Serves TLS with this when set.
    tls: Option<tokio_rustls::TlsAcceptor>,
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
        Self::start_keeping(port, true)
    }

    /// Like [`Self::start`], but only counts requests per path:
    /// [`Self::requests`] stays empty, so memory does not grow with load.
    pub async fn counting(port: u16) -> io::Result<Receiver> {
        Self::start_keeping(port, false)
    }

    /// Like [`Self::start`], over TLS with `pki`'s server certificate,
    /// offering HTTP/2 and HTTP/1.1 by ALPN; [`Self::url`] is `https://`.
    pub async fn start_tls(port: u16, pki: &crate::pki::Pki) -> io::Result<Receiver> {
        let acceptor = tokio_rustls::TlsAcceptor::from(pki.server_config(&["h2", "http/1.1"]));
        Self::start_with(port, true, Some(acceptor))
    }

    fn start_keeping(port: u16, keep_requests: bool) -> io::Result<Receiver> {
        Self::start_with(port, keep_requests, None)
    }

    fn start_with(
        port: u16,
        keep_requests: bool,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> io::Result<Receiver> {
        let listener = bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))?;
        let mut receiver = Receiver {
            shared: Arc::new(Shared::new(keep_requests)),
            addr: listener.local_addr()?,
            tls,
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
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}{slash}{path}", self.addr)
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

    /// How many requests have arrived at `path` so far.
    pub fn count_to(&self, path: &str) -> usize {
        self.shared.count_to(path)
    }

    /// Forgets every request and count so far (between benchmark phases).
    pub fn clear(&self) {
        *self.shared.log() = Log::default();
    }

    /// "Receiver stalled": connections stay open, but requests wait unread
    /// until [`Self::resume`].
    pub fn pause(&self) {
        self.shared.paused.send_replace(true);
    }

    /// Lets paused requests, and every later one, through.
    pub fn resume(&self) {
        self.shared.paused.send_replace(false);
    }

    /// The most requests that were in progress at once (delays included).
    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }

    /// Requests in progress now (delays included).
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::SeqCst)
    }

    /// Starts [`Self::max_in_flight`] again from what is in flight now, to
    /// measure concurrency from a point on (e.g. once a circuit opened).
    pub fn reset_max_in_flight(&self) {
        let now = self.shared.in_flight.load(Ordering::SeqCst);
        self.shared.max_in_flight.store(now, Ordering::SeqCst);
        // A request that came in between the two lines above counts again.
        let now = self.shared.in_flight.load(Ordering::SeqCst);
        self.shared.max_in_flight.fetch_max(now, Ordering::SeqCst);
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
        let tls = self.tls.clone();
        self.server = Some(SERVING.spawn(async move {
            let _ = match tls {
                Some(acceptor) => {
                    axum::serve(connection::TlsListener::new(listener, acceptor), app).await
                }
                None => axum::serve(listener, app).await,
            };
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

/// SO_REUSEADDR, so `start_again` can rebind while old connections sit in
/// TIME_WAIT. Registered with [`SERVING`], where it is served.
fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let _serving = SERVING.enter();
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// The one handler, for every method and path.
async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let _in_flight = InFlight::enter(&shared);
    // Subscribed before the request is recorded: a test that stops the
    // receiver once it sees the request must still end the delay below.
    let mut stopped = shared.generation.subscribe();
    let mut paused = shared.paused.subscribe();
    let _ = paused.wait_for(|paused| !*paused).await;
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(body) => body,
        Err(_) => return StatusCode::PAYLOAD_TOO_LARGE.into_response(),
    };
    let request = ReceivedRequest {
        method: parts.method.to_string(),
        version: format!("{:?}", parts.version),
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
    let mut response = Response::new(Body::from(reply.body.clone()));
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

#[cfg(test)]
mod tests;
