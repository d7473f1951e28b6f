//! `leadhook webhooks test NAME`: one sample `save_lead` sent to one
//! webhook exactly as a delivery would send it (its method, headers,
//! signature and timeout, through [`request::build`]), and what came back
//! printed for a person, with a hint when it failed. Partners run it before
//! go-live, as with the "send test event" of Stripe or Svix.
//!
//! It touches no database: the config is all it needs, so it works before
//! anything else is set up.

use std::fmt;
use std::io::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use reqwest::header::{HeaderMap, HeaderValue, LOCATION};

use super::clients::http_client;
use super::{Webhook, request};
use crate::config::{Config, WebhookConfig};

/// How much of an answer's body is shown: enough for an error message,
/// little enough to read.
const BODY_SHOWN: usize = 2048;

/// Why no test event could be sent.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("no webhook named {name:?} in the config; configured: {}", Known(.known))]
    UnknownWebhook { name: String, known: Vec<String> },
    #[error("cannot build the HTTP client: {0}")]
    Client(reqwest::Error),
    /// Cannot happen (the config was checked); the error carries no URL.
    #[error("cannot build the request: {0}")]
    Request(reqwest::Error),
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
}

/// The configured names, for the unknown-name error.
struct Known<'a>(&'a [String]);

impl fmt::Display for Known<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        for (i, name) in self.0.iter().enumerate() {
            let comma = if i == 0 { "" } else { ", " };
            write!(f, "{comma}{name:?}")?;
        }
        Ok(())
    }
}

/// Sends one sample `save_lead` to the webhook called `name` and writes the
/// exchange to `out`: the request (header names only, values are secrets),
/// the answer's status, headers and the start of its body, and on failure a
/// `hint:` line. `Ok(true)` when it answered 2xx.
pub async fn test(config: &Config, name: &str, out: &mut impl Write) -> Result<bool, ProbeError> {
    send(find(config, name)?, out).await
}

/// [`test`] for a webhook already found (a registry row, say). One that
/// may not reach private networks is sent through the guarded client.
pub(crate) async fn send(found: &WebhookConfig, out: &mut impl Write) -> Result<bool, ProbeError> {
    let client = http_client(found.public_only, found.http2).map_err(ProbeError::Client)?;
    let headers = request::own_headers(found);
    let transport = super::transport::Transport::new(found, headers, || Ok(client.clone()))
        .map_err(ProbeError::Client)?;
    let hook = Webhook::new(found, &Default::default(), transport);
    let id = test_id(SystemTime::now());
    let payload = crate::lead::sample_payload();
    let request = request::build(&hook, &client, &id, &payload)
        .build()
        .map_err(|e| ProbeError::Request(e.without_url()))?;
    write_notes(out, found)?;
    write_request(out, &hook, &id, &request, &payload)?;
    match exchange(out, &client, request).await? {
        None => Ok(true),
        Some(trouble) => {
            writeln!(out, "hint: {}", hint(&trouble, hook.policy.timeout))?;
            Ok(false)
        }
    }
}

/// Sends `request` and writes what came back, or why nothing did; the
/// trouble when it was not a 2xx. The time is until the answer's head,
/// as the delivery metric measures it.
async fn exchange(
    out: &mut impl Write,
    client: &reqwest::Client,
    request: reqwest::Request,
) -> std::io::Result<Option<Trouble>> {
    let started = Instant::now();
    let sent = client.execute(request).await;
    let elapsed = started.elapsed();
    match sent {
        Ok(response) => {
            let trouble = (!response.status().is_success()).then(|| Trouble::of_answer(&response));
            write_response(out, response, elapsed).await?;
            Ok(trouble)
        }
        Err(error) => {
            let failure = request::unanswered(&error);
            let millis = elapsed.as_millis();
            writeln!(out, "! no answer after {millis} ms: {failure}")?;
            Ok(Some(Trouble::of_error(&error)))
        }
    }
}

/// The configured webhook called `name`, enabled or not: testing a webhook
/// before enabling it is the point.
pub(crate) fn find<'c>(config: &'c Config, name: &str) -> Result<&'c WebhookConfig, ProbeError> {
    config
        .webhooks
        .iter()
        .find(|hook| hook.name == name)
        .ok_or_else(|| ProbeError::UnknownWebhook {
            name: name.to_owned(),
            known: config.webhooks.iter().map(|h| h.name.clone()).collect(),
        })
}

/// `test_` and the Unix time in milliseconds. A real change's id never
/// starts so (they are `<system id>-<LSN>-…` or `outbox-…`), so a receiver
/// can tell a test event from a lead and discard it, and two tests a
/// millisecond apart or more never share an id.
fn test_id(now: SystemTime) -> HeaderValue {
    let millis = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    HeaderValue::try_from(format!("test_{millis}"))
        .expect("letters, an underscore and digits are a valid header value")
}

/// Says when the webhook would get no real changes as configured.
fn write_notes(out: &mut impl Write, hook: &WebhookConfig) -> std::io::Result<()> {
    if !hook.enabled {
        writeln!(
            out,
            "note: webhook {:?} is disabled: it gets this test, but no changes until it is enabled",
            hook.name
        )?;
    }
    if !hook.save_lead {
        writeln!(
            out,
            "note: webhook {:?} does not list save_lead in events: it gets this test, but no changes",
            hook.name
        )?;
    }
    Ok(())
}

/// The request as sent: the URL redacted (it may hold credentials), header
/// values hidden (tokens, the signature), the sample payload in full.
fn write_request(
    out: &mut impl Write,
    hook: &Webhook,
    id: &HeaderValue,
    request: &reqwest::Request,
    payload: &Bytes,
) -> std::io::Result<()> {
    let id = id.to_str().unwrap_or_default();
    writeln!(out, "sending test event {id} to webhook {:?}", hook.name)?;
    writeln!(out, "> {} {}", request.method(), hook.shown_url)?;
    for name in request.headers().keys() {
        writeln!(out, "> {name}: [redacted]")?;
    }
    writeln!(out, ">")?;
    writeln!(out, "> {}", String::from_utf8_lossy(payload))
}

/// The status with the time it took, the headers, and the start of the body.
async fn write_response(
    out: &mut impl Write,
    response: reqwest::Response,
    elapsed: Duration,
) -> std::io::Result<()> {
    let version = response.version();
    let status = response.status();
    writeln!(out, "< {version:?} {status} in {} ms", elapsed.as_millis())?;
    write_headers(out, response.headers())?;
    let (start, more) = body_start(response).await;
    writeln!(out, "<")?;
    for line in shown_body(&start).lines() {
        writeln!(out, "< {line}")?;
    }
    match more {
        Ended::All if start.is_empty() => writeln!(out, "(empty body)"),
        Ended::All => Ok(()),
        Ended::More => writeln!(out, "(the first {BODY_SHOWN} bytes of the body)"),
        Ended::Failed(why) => writeln!(out, "(the body broke off: {why})"),
    }
}

fn write_headers(out: &mut impl Write, headers: &HeaderMap) -> std::io::Result<()> {
    for (name, value) in headers {
        writeln!(out, "< {name}: {}", shown_body(value.as_bytes()))?;
    }
    Ok(())
}

/// How reading the start of a body ended.
#[derive(Debug)]
enum Ended {
    All,
    /// There was more than [`BODY_SHOWN`]; the rest was not read.
    More,
    Failed(String),
}

/// Up to [`BODY_SHOWN`] bytes of the body; the rest is left unread, so a
/// huge answer costs nothing.
async fn body_start(mut response: reqwest::Response) -> (Bytes, Ended) {
    let mut start = BytesMut::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => start.extend_from_slice(&chunk),
            Ok(None) => return (start.freeze(), Ended::All),
            Err(e) => {
                return (
                    start.freeze(),
                    Ended::Failed(request::unanswered(&e).to_string()),
                );
            }
        }
        if start.len() > BODY_SHOWN {
            start.truncate(BODY_SHOWN);
            return (start.freeze(), Ended::More);
        }
    }
}

/// Bytes as text a terminal shows safely: invalid UTF-8 and control
/// characters other than newlines and tabs become U+FFFD, so an answer
/// cannot move the cursor or recolour the screen.
fn shown_body(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .replace("\r\n", "\n")
        .chars()
        .map(|c| match c {
            '\n' | '\t' => c,
            c if c.is_control() => char::REPLACEMENT_CHARACTER,
            c => c,
        })
        .collect()
}

/// What went wrong, as far as choosing a hint goes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Trouble {
    /// An answer other than 2xx; a redirect's `Location`, if it had one.
    Status {
        status: u16,
        location: Option<String>,
    },
    /// No answer within the webhook's `timeout`.
    Timeout,
    /// Nothing accepts connections at the URL's host and port.
    Refused,
    /// The URL's host name does not resolve.
    UnknownHost,
    /// The TLS handshake failed (certificate, host name or protocol).
    Tls,
    /// Any other failure before an answer.
    Other,
}

impl Trouble {
    fn of_status(status: u16, location: Option<String>) -> Trouble {
        Trouble::Status { status, location }
    }

    /// A non-2xx answer, with the `Location` a redirect hint shows.
    fn of_answer(response: &reqwest::Response) -> Trouble {
        let location = response
            .headers()
            .get(LOCATION)
            .map(|v| shown_body(v.as_bytes()));
        Trouble::of_status(response.status().as_u16(), location)
    }

    /// Sorts a failed request by the error's chain of causes.
    fn of_error(error: &reqwest::Error) -> Trouble {
        if error.is_timeout() {
            return Trouble::Timeout;
        }
        if error.is_dns() {
            return Trouble::UnknownHost;
        }
        std::iter::successors(Some(error as &Cause), |&cause| next_cause(cause))
            .find_map(|cause| {
                let io = cause.downcast_ref::<std::io::Error>();
                if cause.is::<rustls::Error>() {
                    Some(Trouble::Tls)
                } else if io.is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused) {
                    Some(Trouble::Refused)
                } else {
                    None
                }
            })
            .unwrap_or(Trouble::Other)
    }
}

type Cause = dyn std::error::Error + 'static;

/// The error `cause` wraps. An `io::Error`'s `source()` skips the error it
/// wraps (tokio-rustls wraps rustls' errors in one, and hyper that in
/// another), hence `get_ref` first.
fn next_cause(cause: &Cause) -> Option<&Cause> {
    match cause
        .downcast_ref::<std::io::Error>()
        .and_then(std::io::Error::get_ref)
    {
        Some(inner) => Some(inner),
        None => cause.source(),
    }
}

/// One line on what to look at; `timeout` is the webhook's.
fn hint(trouble: &Trouble, timeout: Duration) -> String {
    let timeout = humantime::format_duration(timeout);
    match trouble {
        Trouble::Timeout => format!(
            "no answer within the timeout ({timeout}): receivers must answer within `timeout`, so answer 2xx at once and do the work asynchronously"
        ),
        Trouble::Refused => "connection refused: nothing listens at the URL's host and port; check them, and that the receiver is running and reachable from here".into(),
        Trouble::UnknownHost => "the URL's host name does not resolve: check its spelling and this machine's DNS".into(),
        Trouble::Tls => "the TLS handshake failed: check that the endpoint serves https with a valid certificate for its host name, trusted by this machine".into(),
        Trouble::Other => "the request failed before any answer: check the URL and the network between here and the receiver".into(),
        Trouble::Status { status, location } => status_hint(*status, location.as_deref()),
    }
}

fn status_hint(status: u16, location: Option<&str>) -> String {
    match status {
        300..=399 => {
            let to = location.map_or_else(
                || " (without a Location)".to_owned(),
                |location| format!(" to {location}"),
            );
            format!("the receiver redirects{to}; leadhook does not follow redirects, so set the webhook's url to the final URL")
        }
        401 | 403 => format!(
            "the receiver refused the credentials ({status}): check the Authorization header (or whichever header carries the token) and the signing secret"
        ),
        404 => "the receiver has no such path (404): check the URL's path".into(),
        405 => "the receiver does not allow this method here (405): check the webhook's method and the URL's path".into(),
        429 => "the receiver is rate-limiting (429): real deliveries would wait (honouring Retry-After) and be retried".into(),
        500..=599 => format!(
            "receiver error ({status}): see the receiver's logs; real deliveries would be retried with backoff for `retry_for`"
        ),
        _ => format!(
            "the receiver refused the request ({status}): compare what it expects with the documented save_lead payload and the webhook's headers"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(10);

    fn status(status: u16) -> String {
        hint(&Trouble::of_status(status, None), TIMEOUT)
    }

    #[test]
    fn a_timeout_hint_names_the_timeout_and_asks_for_asynchronous_work() {
        let hint = hint(&Trouble::Timeout, TIMEOUT);
        assert!(hint.contains("(10s)"), "{hint}");
        assert!(hint.contains("asynchronously"), "{hint}");
    }

    #[test]
    fn connection_dns_and_tls_failures_each_get_their_own_hint() {
        let refused = hint(&Trouble::Refused, TIMEOUT);
        assert!(refused.contains("connection refused"), "{refused}");
        let dns = hint(&Trouble::UnknownHost, TIMEOUT);
        assert!(dns.contains("DNS"), "{dns}");
        let tls = hint(&Trouble::Tls, TIMEOUT);
        assert!(tls.contains("certificate"), "{tls}");
    }

    #[test]
    fn refused_credentials_point_at_the_authorization_header_and_the_secret() {
        for code in [401, 403] {
            let hint = status(code);
            assert!(hint.contains("Authorization header"), "{hint}");
            assert!(hint.contains("secret"), "{hint}");
        }
    }

    #[test]
    fn a_redirect_hint_shows_the_location_and_asks_for_the_final_url() {
        let moved = Trouble::of_status(301, Some("https://new.example.com/leads".into()));
        let hint = hint(&moved, TIMEOUT);
        assert!(hint.contains("to https://new.example.com/leads"), "{hint}");
        assert!(hint.contains("does not follow redirects"), "{hint}");
        assert!(status(307).contains("without a Location"));
    }

    #[test]
    fn not_found_and_method_not_allowed_point_at_the_path_and_the_method() {
        assert!(status(404).contains("path"));
        assert!(status(405).contains("method"));
    }

    #[test]
    fn a_server_error_says_real_deliveries_would_be_retried() {
        for code in [500, 502, 503] {
            let hint = status(code);
            assert!(hint.contains("receiver error"), "{hint}");
            assert!(hint.contains("retried"), "{hint}");
        }
    }

    #[test]
    fn a_test_id_says_it_is_a_test_and_carries_the_time() {
        let at = UNIX_EPOCH + Duration::from_millis(1_718_000_000_123);
        assert_eq!(test_id(at), "test_1718000000123");
    }

    #[test]
    fn a_shown_body_keeps_lines_and_replaces_bad_bytes_and_escapes() {
        let shown = shown_body(b"line 1\r\n\x1b[31mred\xff\tend\r");
        assert_eq!(shown, "line 1\n\u{fffd}[31mred\u{fffd}\tend\u{fffd}");
    }

    /// A port nothing listens on: bound, then closed.
    fn closed_port() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    }

    async fn error_of(url: String) -> reqwest::Error {
        let client = http_client(false, Default::default()).unwrap();
        client.post(url).send().await.unwrap_err()
    }

    #[tokio::test]
    async fn a_closed_port_is_a_refused_connection() {
        let error = error_of(format!("http://127.0.0.1:{}/", closed_port())).await;
        assert_eq!(Trouble::of_error(&error), Trouble::Refused, "{error:?}");
    }

    #[tokio::test]
    async fn https_to_a_plain_http_port_is_a_tls_failure() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = [0; 1024];
            let _ = socket.read(&mut buf).await;
            let _ = socket.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        });
        let error = error_of(format!("https://127.0.0.1:{port}/")).await;
        assert_eq!(Trouble::of_error(&error), Trouble::Tls, "{error:?}");
        server.abort();
    }
}
