//! One endpoint's connections: idle HTTP/1.1 connections, taken by one
//! request at a time, and the HTTP/2 connection every request shares.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use super::TransportError;
use super::connect::{Address, Connected};
use super::http1::Http1;
use super::http2::Http2;

/// How long an idle connection is kept: servers close theirs after a while
/// (often 5 s to a few minutes), and one that did is found out on checkout.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// How often idle connections past [`IDLE_TIMEOUT`] are closed, so a
/// webhook gone quiet does not keep its sockets (half-closed by the server,
/// often) until its next request.
const REAP_EVERY: Duration = Duration::from_secs(15);

/// Idle HTTP/1.1 connections, most recently used last: taken from the end,
/// so the busy ones stay warm and the rest time out. Boxed, so that taking
/// one out moves a pointer, not the connection's kilobytes.
type Idle = Mutex<Vec<Box<Http1>>>;

#[derive(Default)]
pub(super) struct Pool {
    /// Shared with the reaper, which holds it weakly: it ends with the pool.
    idle: Arc<Idle>,
    /// The reaper was started (with the first connection put back).
    reaping: AtomicBool,
    h2: Mutex<Option<Http2>>,
    /// Held while a connection that may turn out HTTP/2 is made, so that
    /// the first requests share one instead of each opening its own.
    connecting: tokio::sync::Mutex<()>,
    /// A TLS handshake under `auto` chose HTTP/1.1: connect freely.
    speaks_http1: AtomicBool,
}

/// A connection to send one request on.
pub(super) enum Checkout {
    /// Taken from the pool: give it back with [`Pool::checkin`].
    Http1(Box<Http1>),
    Http2(Http2),
}

impl Pool {
    pub(super) async fn checkout(&self, address: &Address) -> Result<Checkout, TransportError> {
        if let Some(shared) = self.shared() {
            return Ok(Checkout::Http2(shared));
        }
        while let Some(mut idle) = self.take_idle() {
            if idle.idle_since.elapsed() < IDLE_TIMEOUT && idle.is_usable().await {
                return Ok(Checkout::Http1(idle));
            }
        }
        if !address.may_be_http2() || self.speaks_http1.load(Ordering::Relaxed) {
            return self.connect(address).await;
        }
        let one_at_a_time = self.connecting.lock().await;
        if let Some(shared) = self.shared() {
            return Ok(Checkout::Http2(shared));
        }
        if self.speaks_http1.load(Ordering::Relaxed) {
            drop(one_at_a_time);
        }
        self.connect(address).await
    }

    /// Puts a connection back, unless it cannot serve another request.
    pub(super) fn checkin(&self, mut connection: Box<Http1>) {
        if connection.is_reusable() {
            connection.idle_since = Instant::now();
            lock(&self.idle).push(connection);
            if !self.reaping.swap(true, Ordering::Relaxed) {
                tokio::spawn(reap_every(Arc::downgrade(&self.idle)));
            }
        }
    }

    async fn connect(&self, address: &Address) -> Result<Checkout, TransportError> {
        // Boxed: connecting (DNS, TCP, TLS) is kilobytes of state, rarely
        // needed, and would otherwise be part of every request's future.
        match Box::pin(address.connect()).await? {
            Connected::Http1(connection) => {
                self.speaks_http1.store(true, Ordering::Relaxed);
                Ok(Checkout::Http1(connection))
            }
            Connected::Http2(connection) => {
                *lock(&self.h2) = Some(connection.clone());
                Ok(Checkout::Http2(connection))
            }
        }
    }

    /// The HTTP/2 connection, while it is open.
    fn shared(&self) -> Option<Http2> {
        let mut h2 = lock(&self.h2);
        match &*h2 {
            Some(connection) if connection.is_open() => Some(connection.clone()),
            Some(_) => {
                *h2 = None;
                None
            }
            None => None,
        }
    }

    fn take_idle(&self) -> Option<Box<Http1>> {
        lock(&self.idle).pop()
    }
}

/// Closes idle connections past [`IDLE_TIMEOUT`] every [`REAP_EVERY`],
/// until the pool is gone.
async fn reap_every(idle: Weak<Idle>) {
    let mut ticks = tokio::time::interval(REAP_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let Some(idle) = idle.upgrade() else { return };
        reap(&idle, Instant::now());
    }
}

/// Drops (and so closes) the connections idle for [`IDLE_TIMEOUT`] at `now`.
fn reap(idle: &Idle, now: Instant) {
    lock(idle).retain(|connection| now.duration_since(connection.idle_since) < IDLE_TIMEOUT);
}

/// A poisoned lock only means a panic elsewhere; the pool is still sound.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;
    use tokio_util::either::Either;

    use super::*;

    /// A connection to a local listener, and the server's end of it.
    async fn connection() -> (Box<Http1>, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a local listener");
        let address = listener.local_addr().expect("its address");
        let client = tokio::net::TcpStream::connect(address)
            .await
            .expect("a connection");
        let (server, _) = listener.accept().await.expect("accepted");
        (Box::new(Http1::new(Either::Left(client))), server)
    }

    #[tokio::test]
    async fn idle_connections_past_the_idle_timeout_are_closed_without_a_request() {
        let pool = Pool::default();
        let (old, mut old_server) = connection().await;
        let (fresh, _fresh_server) = connection().await;
        pool.checkin(old);
        pool.checkin(fresh);
        let later = Instant::now() + IDLE_TIMEOUT - Duration::from_secs(1);
        lock(&pool.idle)[0].idle_since -= Duration::from_secs(2);

        reap(&pool.idle, later);

        assert_eq!(lock(&pool.idle).len(), 1, "the fresh one is kept");
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), old_server.read(&mut byte)).await;
        assert!(matches!(read, Ok(Ok(0))), "closed: {read:?}");
    }
}
