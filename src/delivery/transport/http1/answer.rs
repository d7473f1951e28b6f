//! An HTTP/1.1 answer as bytes from the endpoint: its head parsed with
//! `httparse`, its body framed (RFC 9112, section 6) and skipped. No I/O:
//! the connection feeds it what it has read, so every split of the bytes
//! is tested, and fuzzed, without a socket.

use bytes::{Buf, BytesMut};
use reqwest::StatusCode;
use reqwest::header::HeaderValue;

/// Headers an answer may have: more is an error (hyper's limit, too).
const MAX_HEADERS: usize = 100;

/// A head still incomplete at this size is refused.
pub(super) const MAX_HEAD: usize = 64 * 1024;

/// What delivery needs of an answer's head.
#[derive(Debug)]
pub(crate) struct Head {
    pub(crate) status: StatusCode,
    /// For the retry rules.
    pub(crate) retry_after: Option<HeaderValue>,
    /// For the log line of a redirect.
    pub(crate) location: Option<HeaderValue>,
    pub(super) body: Body,
    /// The server keeps the connection for another request.
    pub(super) keep_alive: bool,
}

/// What `buf` began with.
#[derive(Debug)]
pub(super) enum Parsed {
    /// A final answer's head, and its length.
    Head(Head, usize),
    /// An interim answer (`100 Continue`, `103 Early Hints`) of this
    /// length: the final one follows.
    Interim(usize),
    /// More bytes are needed.
    Partial,
}

/// Parses the answer's head at the start of `buf`.
pub(super) fn parse_head(buf: &[u8]) -> Result<Parsed, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut answer = httparse::Response::new(&mut headers);
    let length = match answer.parse(buf) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
            return Err(format!("the answer's head is over {} KiB", MAX_HEAD / 1024));
        }
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(format!("the answer has more than {MAX_HEADERS} headers"));
        }
        Err(e) => return Err(format!("the answer is not HTTP/1.1: {e}")),
    };
    let code = answer.code.unwrap_or_default();
    let status = StatusCode::from_u16(code).map_err(|_| format!("invalid status {code}"))?;
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return Err("the server switched protocols".into());
    }
    if status.is_informational() {
        return Ok(Parsed::Interim(length));
    }
    let mut head = Head {
        status,
        retry_after: None,
        location: None,
        body: Body::Length(0),
        // HTTP/1.0 closes unless asked not to; leadhook never asks.
        keep_alive: answer.version == Some(1),
    };
    let mut length_header = None;
    let mut chunked = None;
    for header in answer.headers.iter() {
        let name = header.name;
        if name.eq_ignore_ascii_case("content-length") {
            let value = parse_length(header.value);
            // Two different lengths: the framing cannot be trusted.
            if length_header.is_some_and(|seen| seen != value) {
                length_header = Some(None);
            } else {
                length_header = Some(value);
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // Only the last coding counts.
            chunked = Some(ends_chunked(header.value));
        } else if name.eq_ignore_ascii_case("connection") {
            if has_token(header.value, "close") {
                head.keep_alive = false;
            }
        } else if name.eq_ignore_ascii_case("retry-after") {
            head.retry_after = HeaderValue::from_bytes(header.value).ok();
        } else if name.eq_ignore_ascii_case("location") {
            head.location = HeaderValue::from_bytes(header.value).ok();
        }
    }
    head.body = if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        Body::Length(0)
    } else {
        match (chunked, length_header) {
            (Some(true), None) => Body::Chunked(Chunk::Size),
            // Both: read as chunked, but not trusted for another request
            // (RFC 9112, 6.3: a sign of smuggling).
            (Some(true), Some(_)) => {
                head.keep_alive = false;
                Body::Chunked(Chunk::Size)
            }
            // Another coding, or no length: the body runs to the close.
            (Some(false), _) | (None, None) | (None, Some(None)) => Body::UntilClose,
            (None, Some(Some(length))) => Body::Length(length),
        }
    };
    Ok(Parsed::Head(head, length))
}

fn parse_length(value: &[u8]) -> Option<u64> {
    let digits = value.trim_ascii();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

fn ends_chunked(value: &[u8]) -> bool {
    value
        .rsplit(|&b| b == b',')
        .next()
        .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// How far through the body the bytes read so far are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Body {
    /// This many bytes are still to come.
    Length(u64),
    Chunked(Chunk),
    /// Until the server closes: the connection cannot be reused.
    UntilClose,
}

/// Where in a chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Chunk {
    /// A chunk's size line comes next.
    Size,
    /// This much of a chunk's data is still to come.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// Trailer lines, then an empty line.
    Trailers,
}

/// The body's framing is broken: the connection is not reused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Malformed;

impl Body {
    /// Consumes what of the body `buf` holds. `Ok(true)` once it has
    /// ended (what follows in `buf` is not this answer's).
    pub(super) fn consume(&mut self, buf: &mut BytesMut) -> Result<bool, Malformed> {
        loop {
            match self {
                Body::Length(left) => {
                    take(buf, left);
                    return Ok(*left == 0);
                }
                Body::UntilClose => return Err(Malformed),
                Body::Chunked(chunk) => {
                    if !chunk.consume(buf)? {
                        return Ok(false);
                    }
                    if *chunk == Chunk::Trailers {
                        *self = Body::Length(0);
                    }
                }
            }
        }
    }
}

impl Chunk {
    /// One step through the chunked body: `Ok(false)` when `buf` holds too
    /// little for it. After the last step the state is `Trailers` and the
    /// empty line has been consumed (the caller checks for that).
    fn consume(&mut self, buf: &mut BytesMut) -> Result<bool, Malformed> {
        match self {
            Chunk::Size => match httparse::parse_chunk_size(buf) {
                Ok(httparse::Status::Complete((length, 0))) => {
                    buf.advance(length);
                    *self = Chunk::Trailers;
                    self.trailers(buf)
                }
                Ok(httparse::Status::Complete((length, size))) => {
                    buf.advance(length);
                    *self = Chunk::Data(size);
                    Ok(true)
                }
                Ok(httparse::Status::Partial) => Ok(false),
                Err(_) => Err(Malformed),
            },
            Chunk::Data(left) => {
                take(buf, left);
                if *left > 0 {
                    return Ok(false);
                }
                *self = Chunk::DataEnd;
                Ok(true)
            }
            Chunk::DataEnd => match buf.get(..2) {
                None => Ok(false),
                Some(b"\r\n") => {
                    buf.advance(2);
                    *self = Chunk::Size;
                    Ok(true)
                }
                Some(_) => Err(Malformed),
            },
            Chunk::Trailers => self.trailers(buf),
        }
    }

    /// Skips trailer lines up to and including the empty line: `Ok(true)`
    /// once it is consumed.
    fn trailers(&mut self, buf: &mut BytesMut) -> Result<bool, Malformed> {
        while let Some(end) = buf.windows(2).position(|pair| pair == b"\r\n") {
            buf.advance(end + 2);
            if end == 0 {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// Drops up to `left` bytes from the front of `buf`, counting them off.
fn take(buf: &mut BytesMut, left: &mut u64) {
    let taken = usize::try_from(*left).unwrap_or(usize::MAX).min(buf.len());
    buf.advance(taken);
    *left -= taken as u64;
}

/// Reads `bytes` as answers arriving in pieces of `piece` bytes, as the
/// connection would (the fuzz target's entry).
#[cfg(feature = "fuzzing")]
pub(in crate::delivery::transport) fn read_all(bytes: &[u8], piece: usize) {
    let mut pieces = bytes.chunks(piece.max(1));
    let mut buf = BytesMut::new();
    let mut body = None::<Body>;
    loop {
        match &mut body {
            None => match parse_head(&buf) {
                Ok(Parsed::Head(head, length)) => {
                    buf.advance(length);
                    body = Some(head.body);
                    continue;
                }
                Ok(Parsed::Interim(length)) => {
                    buf.advance(length);
                    continue;
                }
                Ok(Parsed::Partial) => {}
                Err(_) => return,
            },
            Some(framing) => match framing.consume(&mut buf) {
                // The next answer, as a connection reused would read it.
                Ok(true) => {
                    body = None;
                    continue;
                }
                Ok(false) => {}
                Err(Malformed) => return,
            },
        }
        match pieces.next() {
            Some(next) => buf.extend_from_slice(next),
            None => return,
        }
    }
}
