//! An HTTP/1.1 connection driven by the task whose request it carries:
//! hyper's connection future is polled beside the request, so neither a
//! task of its own nor a wake-up across tasks is paid per request.

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::task::Poll;
use std::time::Instant;

use hyper::client::conn::http1;

use super::connect::{Io, root_cause};
use super::{Answer, Body, TransportError, drain};

pub(super) struct Http1 {
    send: http1::SendRequest<Body>,
    connection: http1::Connection<Io, Body>,
    /// The connection future has finished (closed, or failed) and must not
    /// be polled again; the connection is not reused.
    ended: bool,
    /// When it was last put back in the pool, for the idle timeout.
    pub(super) idle_since: Instant,
}

impl Http1 {
    pub(super) fn new(
        send: http1::SendRequest<Body>,
        connection: http1::Connection<Io, Body>,
    ) -> Self {
        Http1 {
            send,
            connection,
            ended: false,
            idle_since: Instant::now(),
        }
    }

    /// Whether it may be put back in the pool.
    pub(super) fn is_reusable(&self) -> bool {
        !self.ended
    }

    /// Whether it can take a request now. Polls the connection once, so a
    /// close the server sent while it sat idle is seen here, not by the
    /// request.
    pub(super) async fn is_usable(&mut self) -> bool {
        if self.ended {
            return false;
        }
        let open =
            poll_fn(|cx| Poll::Ready(Pin::new(&mut self.connection).poll(cx).is_pending())).await;
        self.ended = !open;
        open && self.send.is_ready()
    }

    /// One request and its answer. The answer's body is read (to
    /// `BODY_KEPT`) and dropped, so the connection can serve the next.
    pub(super) async fn exchange(
        &mut self,
        request: http::Request<Body>,
    ) -> Result<Answer, TransportError> {
        let sent = self.send.try_send_request(request);
        let response = match self.drive(sent).await {
            Some(Ok(response)) => response,
            Some(Err(e)) => return Err(TransportError::Request(root_cause(e.error()))),
            None => {
                return Err(TransportError::Request(
                    "the connection closed before an answer".into(),
                ));
            }
        };
        let (parts, body) = response.into_parts();
        if self.drive(drain(body)).await != Some(true) {
            self.ended = true;
        }
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
        })
    }

    /// Runs `work` while driving the connection that serves it. `None` when
    /// the connection ended before `work` did.
    async fn drive<F: Future>(&mut self, work: F) -> Option<F::Output> {
        let mut work = pin!(work);
        let connection = &mut self.connection;
        let ended = &mut self.ended;
        poll_fn(|cx| {
            if !*ended && Pin::new(&mut *connection).poll(cx).is_ready() {
                *ended = true;
            }
            if let Poll::Ready(output) = work.as_mut().poll(cx) {
                return Poll::Ready(Some(output));
            }
            match *ended {
                true => Poll::Ready(None),
                false => Poll::Pending,
            }
        })
        .await
    }
}
