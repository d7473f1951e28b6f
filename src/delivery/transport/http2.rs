//! An HTTP/2 connection, shared by every request to its endpoint, over the
//! `h2` crate itself: a request's task opens its stream and awaits the
//! answer on it, so a request costs neither a task of its own nor a
//! hand-off through a channel (hyper's client spends both per request).
//! The connection runs in a task of its own, which also pings the server.

use std::future::poll_fn;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use h2::client::{Connection, SendRequest};
use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::connect::{Stream, root_cause};
use super::{Answer, BODY_KEPT, TransportError};

/// How often the connection is pinged, and how long an answer may take: a
/// timed-out request resets only its stream, so without pings a dead
/// connection would keep taking every request.
const PING_EVERY: Duration = Duration::from_secs(10);
const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// Headers that belong to one HTTP/1.1 connection and that HTTP/2 forbids
/// (RFC 9113 §8.2.2); a webhook may configure them for HTTP/1.1.
const CONNECTION_HEADERS: [HeaderName; 5] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Why an exchange failed.
pub(super) enum Failed {
    /// The server never took the request: it was past a GOAWAY's last
    /// stream, refused (REFUSED_STREAM), or the connection was closing.
    /// Another connection may take it at once (RFC 9113 §8.7), as servers
    /// that rotate connections (nginx, every 1 000 requests) expect.
    TurnedAway(TransportError),
    Other(TransportError),
}

/// A handle on the shared connection; cloned per request.
#[derive(Clone)]
pub(super) struct Http2 {
    send: SendRequest<Bytes>,
    /// Set when the connection ended or turned a request away (GOAWAY, or
    /// no new stream possible): the pool then makes a new one.
    closed: Arc<AtomicBool>,
}

impl Http2 {
    /// The HTTP/2 handshake over `stream`; the connection then runs on its own.
    pub(super) async fn handshake(stream: Stream) -> Result<Http2, TransportError> {
        let (send, connection) = h2::client::handshake(stream)
            .await
            .map_err(|e| TransportError::Connect(root_cause(&e)))?;
        let closed = Arc::new(AtomicBool::new(false));
        tokio::spawn(run(connection, Arc::clone(&closed)));
        Ok(Http2 { send, closed })
    }

    pub(super) fn is_open(&self) -> bool {
        !self.closed.load(Ordering::Acquire)
    }

    /// One request on a new stream, and its answer. What of the answer's
    /// body has already arrived is read (to `BODY_KEPT`), so the stream
    /// usually ends cleanly; the rest is not waited for (the stream is
    /// reset): a 2xx is a success once its head is in.
    pub(super) async fn exchange(
        &self,
        mut request: http::Request<()>,
        body: &Bytes,
    ) -> Result<Answer, Failed> {
        request
            .headers_mut()
            .entry(header::CONTENT_LENGTH)
            .or_insert_with(|| HeaderValue::from(body.len()));
        let mut send = match self.send.clone().ready().await {
            Ok(send) => send,
            Err(e) => return Err(self.not_opened(&e)),
        };
        let (response, mut stream) = match send.send_request(request, body.is_empty()) {
            Ok(opened) => opened,
            Err(e) => return Err(self.not_opened(&e)),
        };
        if !body.is_empty() {
            // The payload is shared, not copied; it is small enough to be
            // buffered whole until the stream's window lets it out.
            stream
                .send_data(body.clone(), true)
                .map_err(|e| self.failed(&e))?;
        }
        let (parts, mut answer) = response.await.map_err(|e| self.failed(&e))?.into_parts();
        let mut read = 0;
        while read <= BODY_KEPT {
            match poll_fn(|cx| Poll::Ready(answer.poll_data(cx))).await {
                Poll::Ready(Some(Ok(chunk))) => {
                    read += chunk.len();
                    let _ = answer.flow_control().release_capacity(chunk.len());
                }
                _ => break,
            }
        }
        Ok(Answer::new(parts.status, &parts.headers))
    }

    /// No stream could be opened: the connection is gone or going (a new
    /// one is made), or the request itself is one h2 refuses to send.
    fn not_opened(&self, error: &h2::Error) -> Failed {
        match error.is_go_away() || error.is_io() || error.reason().is_some() {
            true => self.turned_away(error),
            false => Failed::Other(TransportError::Request(root_cause(error))),
        }
    }

    /// The connection takes no new stream: a new one is made.
    fn turned_away(&self, error: &h2::Error) -> Failed {
        self.closed.store(true, Ordering::Release);
        Failed::TurnedAway(TransportError::Request(root_cause(error)))
    }

    /// An open stream failed: turned away if the server says it never
    /// processed it.
    fn failed(&self, error: &h2::Error) -> Failed {
        if error.is_go_away() && error.is_remote() {
            return self.turned_away(error);
        }
        let cause = TransportError::Request(root_cause(error));
        match error.reason() {
            Some(h2::Reason::REFUSED_STREAM) => Failed::TurnedAway(cause),
            _ => Failed::Other(cause),
        }
    }
}

/// Leaves out the headers HTTP/2 forbids (RFC 9113, 8.2.2), as hyper did.
pub(super) fn strip_connection_headers(headers: &mut HeaderMap) {
    for name in &CONNECTION_HEADERS {
        headers.remove(name);
    }
    if headers
        .get(header::TE)
        .is_some_and(|te| te.as_bytes() != b"trailers")
    {
        headers.remove(header::TE);
    }
}

/// Drives the connection until it ends, or until the server stops
/// answering pings; either way every stream still open fails.
async fn run(mut connection: Connection<Stream, Bytes>, closed: Arc<AtomicBool>) {
    let pings = connection.ping_pong();
    let mut connection = pin!(connection);
    let ended = match pings {
        Some(pings) => tokio::select! {
            ended = connection.as_mut() => ended.map_err(|e| root_cause(&e)),
            dead = keep_alive(pings) => Err(dead),
        },
        None => connection.await.map_err(|e| root_cause(&e)),
    };
    closed.store(true, Ordering::Release);
    if let Err(error) = ended {
        tracing::debug!(%error, "an HTTP/2 connection to a webhook ended");
    }
}

/// Pings every [`PING_EVERY`]; returns why the connection is dead.
async fn keep_alive(mut pings: h2::PingPong) -> String {
    loop {
        tokio::time::sleep(PING_EVERY).await;
        match tokio::time::timeout(PING_TIMEOUT, pings.ping(h2::Ping::opaque())).await {
            Ok(Ok(_pong)) => {}
            Ok(Err(e)) => return root_cause(&e),
            Err(_) => return format!("no answer to a ping within {PING_TIMEOUT:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_specific_headers_are_not_sent_over_http2() {
        let mut headers = HeaderMap::new();
        for name in ["connection", "keep-alive", "upgrade", "authorization"] {
            headers.insert(HeaderName::from_static(name), HeaderValue::from_static("x"));
        }
        headers.insert(header::TE, HeaderValue::from_static("gzip"));
        strip_connection_headers(&mut headers);
        assert_eq!(headers.keys().collect::<Vec<_>>(), ["authorization"]);
        let mut trailers = HeaderMap::new();
        trailers.insert(header::TE, HeaderValue::from_static("trailers"));
        strip_connection_headers(&mut trailers);
        assert_eq!(trailers.len(), 1);
    }
}
