//! What the receiver records of a request, what it answers, and how a
//! wait for requests fails.

use std::time::{Duration, SystemTime};

use bytes::Bytes;

/// One request as it arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedRequest {
    /// Uppercase, e.g. "POST".
    pub method: String,
    /// "HTTP/1.1" or "HTTP/2.0".
    pub version: String,
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
    /// The response body (empty unless set).
    pub body: Bytes,
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
            body: Bytes::new(),
        }
    }

    /// The same reply, sent after `delay`.
    pub fn after(self, delay: Duration) -> Reply {
        Reply { delay, ..self }
    }

    /// The same reply with this body.
    pub fn with_body(self, body: impl Into<Bytes>) -> Reply {
        Reply {
            body: body.into(),
            ..self
        }
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
