//! The receiver's connections: TCP_NODELAY, and a kill switch so "receiver
//! down" cuts every open connection, idle or mid-request.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use super::Shared;

/// Accepts like a TcpListener, with TCP_NODELAY and a kill switch per connection.
pub(super) struct KillableListener {
    pub(super) inner: TcpListener,
    /// Connections accepted now die when the generation moves on.
    pub(super) generation: u64,
    pub(super) shared: Arc<Shared>,
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

/// [`KillableListener`] with a TLS handshake on each connection; one that
/// fails it is dropped and the next is accepted.
pub(super) struct TlsListener {
    inner: KillableListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl TlsListener {
    pub(super) fn new(inner: KillableListener, acceptor: tokio_rustls::TlsAcceptor) -> Self {
        TlsListener { inner, acceptor }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<Connection>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, SocketAddr) {
        loop {
            let (connection, addr) = axum::serve::Listener::accept(&mut self.inner).await;
            if let Ok(tls) = self.acceptor.accept(connection).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        axum::serve::Listener::local_addr(&self.inner)
    }
}

/// A TcpStream whose I/O fails once the receiver is stopped, so hyper drops
/// idle keep-alive connections too, which a plain abort would leave open.
pub(super) struct Connection {
    pub(super) stream: TcpStream,
    /// The receiver generation this connection belongs to.
    generation: u64,
    /// Resolves when the receiver is stopped or dropped; only for the
    /// wake-up, as tokio's coop budget can make it pending when it is not.
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
            generation,
            stopped,
            dead: false,
            shared: Arc::clone(shared),
        }
    }

    /// Err once stopped; otherwise registers the waker for the stop.
    fn check_alive(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        // The generation is read directly: polling `stopped` alone let a
        // reply out when the task's budget was spent (seen in CI).
        if !self.dead
            && (*self.shared.generation.borrow() != self.generation
                || self.stopped.as_mut().poll(cx).is_ready())
        {
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
