//! An HTTP/1.1 connection, one request at a time, driven by the task whose
//! request it carries: no task of its own, no hand-off between tasks.
//!
//! Every request of an endpoint begins the same way (request line, `Host`,
//! the webhook's own headers), so that part is encoded once, as the
//! endpoint's [`prefix`]; a request adds only its event's headers and its
//! length, and goes out with its payload in one `writev`, the payload not
//! copied. Of the answer only the head is parsed (`answer`); the body is
//! skipped, to [`BODY_KEPT`], so the connection can serve the next request:
//! what has arrived with the head at once, the rest (if any) by
//! [`Http1::finish`], after the delivery has its status.

mod answer;
#[cfg(test)]
mod tests;

use std::future::poll_fn;
use std::io::{self, IoSlice, Write as _};
use std::pin::Pin;
use std::task::Poll;
use std::time::Instant;

use bytes::{Buf, BytesMut};
use reqwest::Method;
use reqwest::header::{
    CONTENT_LENGTH, HOST, HeaderMap, HeaderName, HeaderValue, TRANSFER_ENCODING,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

pub(crate) use answer::Head;
use answer::{Body, Parsed};

use super::connect::Stream;
use super::{BODY_KEPT, TransportError};

#[cfg(feature = "fuzzing")]
pub(in crate::delivery::transport) use answer::read_all as read_answers;

/// How much room each read has (the buffer grows only for larger heads).
const READ_CHUNK: usize = 8 * 1024;

pub(super) struct Http1 {
    stream: Stream,
    /// Read and not yet consumed. Kept with the connection, so one buffer
    /// serves all its answers.
    read: BytesMut,
    /// The head being written: the prefix and this request's headers.
    /// Kept too.
    head: Vec<u8>,
    /// The connection cannot serve another request (closed, broken, or
    /// an answer it did not read to the end).
    ended: bool,
    /// The rest of the last answer's body, still to come.
    unread: Option<Body>,
    /// When it was last put back in the pool, for the idle timeout.
    pub(super) idle_since: Instant,
}

/// What every request to an endpoint begins with: the request line,
/// `Host`, then the webhook's own headers (but the framing ones, which
/// each request sets).
pub(super) fn prefix(
    method: &Method,
    target: &str,
    host: &HeaderValue,
    own: &HeaderMap,
) -> Box<[u8]> {
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(method.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(target.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    push_header(&mut head, &HOST, host);
    for (name, value) in own {
        if name != HOST && name != CONTENT_LENGTH && name != TRANSFER_ENCODING {
            push_header(&mut head, name, value);
        }
    }
    head.into_boxed_slice()
}

/// Header names and values were checked when they were made: neither
/// holds a CR or LF.
fn push_header(head: &mut Vec<u8>, name: &HeaderName, value: &HeaderValue) {
    head.extend_from_slice(name.as_str().as_bytes());
    head.extend_from_slice(b": ");
    head.extend_from_slice(value.as_bytes());
    head.extend_from_slice(b"\r\n");
}

impl Http1 {
    pub(super) fn new(stream: Stream) -> Http1 {
        Http1 {
            stream,
            read: BytesMut::with_capacity(READ_CHUNK),
            head: Vec::with_capacity(512),
            ended: false,
            unread: None,
            idle_since: Instant::now(),
        }
    }

    /// Whether it may be put back in the pool.
    pub(super) fn is_reusable(&self) -> bool {
        !self.ended && self.unread.is_none()
    }

    /// Whether the last answer's body is still coming (see [`Http1::finish`]).
    pub(super) fn is_answered(&self) -> bool {
        self.unread.is_none()
    }

    /// Whether it can take a request now: a close (or anything else) the
    /// server sent while it sat idle is seen here, not by the request.
    /// No system call when nothing came: the runtime knows the socket has
    /// not become readable.
    pub(super) async fn is_usable(&mut self) -> bool {
        if !self.is_reusable() || !self.read.is_empty() {
            return false;
        }
        self.read.reserve(READ_CHUNK);
        let stream = &mut self.stream;
        let read = &mut self.read;
        let quiet = poll_fn(|cx| {
            let mut probe = ReadBuf::uninit(read.spare_capacity_mut());
            Poll::Ready(
                Pin::new(&mut *stream)
                    .poll_read(cx, &mut probe)
                    .is_pending(),
            )
        })
        .await;
        self.ended = !quiet;
        quiet
    }

    /// One request and the head of its answer: `prefix` (the endpoint's),
    /// then `extra` headers, `Content-Length` and `body`. What of the
    /// answer's body came with its head is skipped; if more is to come,
    /// [`Http1::finish`] reads it.
    pub(super) async fn exchange(
        &mut self,
        prefix: &[u8],
        extra: &[(HeaderName, HeaderValue)],
        body: &[u8],
    ) -> Result<Head, TransportError> {
        // Until the answer is in, a failure leaves the connection unusable.
        self.ended = true;
        self.write_request(prefix, extra, body)
            .await
            .map_err(|e| TransportError::Request(super::connect::root_cause(&e)))?;
        let head = self.read_head().await?;
        self.ended = !head.keep_alive;
        if !self.ended {
            self.unread = self.skip_buffered(head.body);
        }
        Ok(head)
    }

    async fn write_request(
        &mut self,
        prefix: &[u8],
        extra: &[(HeaderName, HeaderValue)],
        body: &[u8],
    ) -> io::Result<()> {
        let head = &mut self.head;
        head.clear();
        head.extend_from_slice(prefix);
        for (name, value) in extra {
            push_header(head, name, value);
        }
        write!(head, "content-length: {}\r\n\r\n", body.len())?;
        if !self.stream.is_write_vectored() {
            head.extend_from_slice(body);
            self.stream.write_all(head).await?;
            return self.stream.flush().await;
        }
        let (mut head, mut body) = (&head[..], body);
        while !head.is_empty() || !body.is_empty() {
            let parts = [IoSlice::new(head), IoSlice::new(body)];
            let written = self.stream.write_vectored(&parts).await?;
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            let of_head = written.min(head.len());
            head = &head[of_head..];
            body = &body[written - of_head..];
        }
        self.stream.flush().await
    }

    /// The final answer's head (interim ones are skipped).
    async fn read_head(&mut self) -> Result<Head, TransportError> {
        loop {
            if !self.read.is_empty() {
                match answer::parse_head(&self.read).map_err(TransportError::Request)? {
                    Parsed::Head(head, length) => {
                        self.read.advance(length);
                        return Ok(head);
                    }
                    Parsed::Interim(length) => {
                        self.read.advance(length);
                        continue;
                    }
                    Parsed::Partial => {}
                }
            }
            if self.fill().await? == 0 {
                return Err(TransportError::Request(match self.read.is_empty() {
                    true => "the connection closed before an answer".into(),
                    false => "the connection closed in the middle of an answer".into(),
                }));
            }
        }
    }

    /// Skips what of the body has been read: what is still to come, if
    /// any. A body over [`BODY_KEPT`] is not read, and a malformed one
    /// ends the connection; neither is a failure, since the status already
    /// says how the delivery went.
    fn skip_buffered(&mut self, mut body: Body) -> Option<Body> {
        if matches!(body, Body::Length(length) if length > BODY_KEPT as u64) {
            self.ended = true;
            return None;
        }
        match body.consume(&mut self.read) {
            Ok(true) => {
                self.check_nothing_after();
                None
            }
            Ok(false) => Some(body),
            Err(answer::Malformed) => {
                self.ended = true;
                None
            }
        }
    }

    /// Reads the rest of the last answer's body, so the connection can
    /// serve the next request. More than [`BODY_KEPT`] arriving for it
    /// (however it is framed: a chunk extension or a trailer without end
    /// counts too), a malformed body or the end of the stream end the
    /// connection instead. The caller bounds how long it may take.
    pub(super) async fn finish(&mut self) {
        let Some(mut body) = self.unread.take() else {
            return;
        };
        // Cut off (the caller's time is up), it stays ended.
        self.ended = true;
        let mut arrived = self.read.len();
        loop {
            let read = self.fill().await.unwrap_or(0);
            arrived += read;
            if read == 0 || arrived > BODY_KEPT {
                return;
            }
            match body.consume(&mut self.read) {
                Ok(true) => {
                    self.ended = false;
                    return self.check_nothing_after();
                }
                Ok(false) => {}
                Err(answer::Malformed) => return,
            }
        }
    }

    /// Bytes after the answer: the next answer could not be told apart.
    fn check_nothing_after(&mut self) {
        if !self.read.is_empty() {
            self.ended = true;
        }
    }

    /// Reads what has arrived (waiting for something): how much, 0 at the
    /// end of the stream.
    async fn fill(&mut self) -> Result<usize, TransportError> {
        self.read.reserve(READ_CHUNK);
        self.stream
            .read_buf(&mut self.read)
            .await
            .map_err(|e| TransportError::Request(super::connect::root_cause(&e)))
    }
}
