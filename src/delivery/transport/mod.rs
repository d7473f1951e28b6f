//! How a webhook's requests reach its endpoint.
//!
//! Deliveries are the hot path: one request per event. So each webhook gets
//! its own [`Endpoint`], prepared once from its URL and headers (the
//! request target, `Host`, the webhook's own headers, the TLS name and
//! ALPN, the network rule), with its own pool of connections. An HTTP/1.1
//! connection is driven by the task whose request it carries, and its
//! requests begin with a head encoded once: a request costs that one
//! task's wake-ups, its event's few headers and one `writev`, and no URL
//! parsing, header map, pool keyed by host or middleware. An HTTP/2
//! connection runs in a task of its own (every request in flight shares
//! it) and pings the server; each request opens its stream on it over `h2`
//! directly and awaits its answer there.
//!
//! When the environment names a proxy for the webhook's URL (`HTTPS_PROXY`,
//! `HTTP_PROXY`, `ALL_PROXY`, `NO_PROXY`), its requests go through reqwest,
//! which speaks to proxies. Webhooks that may reach public addresses only
//! never use a proxy (see `guard`).
//!
//! Layout: [`connect`] opens a connection (resolve, guard, TCP, TLS,
//! handshake), [`http1`] drives one inline, [`http2`] shares one,
//! [`pool`] keeps them, [`tls`] holds the TLS settings.

mod connect;
mod http1;
mod http2;
mod pool;
mod tls;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, LOCATION, RETRY_AFTER};
use reqwest::{Method, StatusCode, Url};

use crate::config::WebhookConfig;
pub(crate) use connect::root_cause;
use pool::{Checkout, Pool};

/// How much of an answer's body is read to keep its connection: more, and
/// the connection is closed instead (the answer itself is never used).
const BODY_KEPT: usize = 64 * 1024;

/// How long the rest of an HTTP/1.1 answer's body is waited for once its
/// head is in: longer, and the connection is closed instead.
const BODY_WAIT: Duration = Duration::from_secs(1);

/// One webhook's way to its endpoint, and the headers every one of its
/// requests has.
#[derive(Debug)]
pub(crate) struct Transport {
    /// The webhook's own (see `request::own_headers`).
    headers: HeaderMap,
    way: Way,
}

#[derive(Debug)]
enum Way {
    Direct(Arc<Endpoint>),
    /// Through the proxy the environment names for this URL.
    Proxied(Proxied),
}

/// The answer to a request: all that delivery judges.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    /// For the retry rules.
    pub(crate) retry_after: Option<HeaderValue>,
    /// Where a redirect pointed, for its log line.
    pub(crate) location: Option<HeaderValue>,
}

impl Answer {
    fn new(status: StatusCode, headers: &HeaderMap) -> Answer {
        Answer {
            status,
            retry_after: headers.get(RETRY_AFTER).cloned(),
            location: headers.get(LOCATION).cloned(),
        }
    }
}

impl From<http1::Head> for Answer {
    fn from(head: http1::Head) -> Answer {
        Answer {
            status: head.status,
            retry_after: head.retry_after,
            location: head.location,
        }
    }
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TransportError {
    #[error("timed out")]
    Timeout,
    /// No connection could be made: DNS, TCP, TLS, the network rule.
    #[error("{0}")]
    Connect(String),
    /// The connection broke or the answer was not HTTP.
    #[error("{0}")]
    Request(String),
}

impl Transport {
    /// The transport of `hook`, whose requests all have `headers`:
    /// reqwest's `proxied` client when a proxy applies to its URL (built
    /// only then), its own endpoint otherwise.
    pub(crate) fn new(
        hook: &WebhookConfig,
        headers: HeaderMap,
        proxied: impl FnOnce() -> Result<reqwest::Client, reqwest::Error>,
    ) -> Result<Transport, reqwest::Error> {
        let url = hook.url.expose();
        let way = if !hook.public_only && proxy_applies(url) {
            let client = proxied()?;
            let url = url.clone();
            let method = hook.method.clone();
            Way::Proxied(Proxied {
                client,
                url,
                method,
            })
        } else {
            Way::Direct(Arc::new(Endpoint::new(url, hook, &headers)))
        };
        Ok(Transport { headers, way })
    }

    /// The headers every request of the webhook has.
    pub(crate) fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// Sends one request with the webhook's method and headers and
    /// `extra` ones (the event's). Everything up to the answer's head,
    /// connecting included, happens within `timeout` (an HTTP/1.1 body
    /// still coming after it gets `BODY_WAIT` more, see `Endpoint::send`).
    pub(crate) async fn send(
        &self,
        extra: &[(HeaderName, HeaderValue)],
        body: &Bytes,
        timeout: Duration,
    ) -> Result<Answer, TransportError> {
        match &self.way {
            Way::Direct(endpoint) => endpoint.send(extra, body, timeout).await,
            // Boxed: reqwest's future is large, and rarely needed.
            Way::Proxied(proxied) => {
                let headers = with_extra(&self.headers, extra);
                Box::pin(proxied.send(headers, body, timeout)).await
            }
        }
    }
}

/// `own` and `extra` in one map (for HTTP/2, reqwest and `webhooks test`).
pub(crate) fn with_extra(own: &HeaderMap, extra: &[(HeaderName, HeaderValue)]) -> HeaderMap {
    let mut headers = own.clone();
    for (name, value) in extra {
        headers.insert(name.clone(), value.clone());
    }
    headers
}

/// Whether the environment's proxy settings route `url` through a proxy,
/// as reqwest (which reads them the same way) would.
fn proxy_applies(url: &Url) -> bool {
    let Ok(uri) = url.as_str().parse::<http::Uri>() else {
        return false;
    };
    hyper_util::client::proxy::matcher::Matcher::from_env()
        .intercept(&uri)
        .is_some()
}

/// A webhook's endpoint: what its URL and headers say, prepared once, and
/// its connections.
pub(crate) struct Endpoint {
    /// Path and query: the request target of HTTP/1.1.
    target: http::Uri,
    /// The whole URL (without credentials): HTTP/2 sends its parts.
    absolute: http::Uri,
    /// `host[:port]`, sent as `Host` over HTTP/1.1.
    host_header: HeaderValue,
    /// Credentials in the URL, sent as basic authentication (as reqwest
    /// does); secret, like the URL.
    authorization: Option<HeaderValue>,
    method: Method,
    /// The webhook's own headers, with the URL's credentials, for HTTP/2
    /// (which leaves out those only HTTP/1.1 has).
    http2_headers: HeaderMap,
    /// How every HTTP/1.1 request begins: request line, `Host`, headers.
    /// Secret: it holds the header values.
    http1_prefix: Box<[u8]>,
    address: connect::Address,
    pool: Pool,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Endpoint")
    }
}

impl Endpoint {
    fn new(url: &Url, hook: &WebhookConfig, own: &HeaderMap) -> Endpoint {
        let mut bare = url.clone();
        let authorization = basic_auth(&mut bare);
        let absolute: http::Uri = bare.as_str().parse().unwrap_or_default();
        let target = absolute
            .path_and_query()
            .map(|p| http::Uri::from(p.clone()))
            .unwrap_or_else(|| http::Uri::from_static("/"));
        let host_header = absolute
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            .unwrap_or_else(|| HeaderValue::from_static("localhost"));
        let address = connect::Address::new(&bare, hook.public_only, hook.http2);
        let mut endpoint = Endpoint {
            target,
            absolute,
            host_header,
            authorization,
            method: hook.method.clone(),
            http2_headers: HeaderMap::new(),
            http1_prefix: Box::default(),
            address,
            pool: Pool::default(),
        };
        let mut headers = own.clone();
        endpoint.authorize(&mut headers);
        endpoint.http1_prefix = http1::prefix(
            &endpoint.method,
            endpoint.target.path_and_query().map_or("/", |p| p.as_str()),
            &endpoint.host_header,
            &headers,
        );
        http2::strip_connection_headers(&mut headers);
        endpoint.http2_headers = headers;
        endpoint
    }

    /// Adds the URL's credentials, unless the webhook configures its own
    /// `Authorization` (which wins, as it did with reqwest).
    fn authorize(&self, headers: &mut HeaderMap) {
        if let Some(authorization) = &self.authorization {
            headers
                .entry(reqwest::header::AUTHORIZATION)
                .or_insert_with(|| authorization.clone());
        }
    }

    /// The answer's head within `timeout`. An HTTP/1.1 answer's body still
    /// coming after it is waited for at most [`BODY_WAIT`] more, outside
    /// the timeout: the delivery has its status by then, and a body that
    /// takes longer only costs its connection.
    async fn send(
        &self,
        extra: &[(HeaderName, HeaderValue)],
        body: &Bytes,
        timeout: Duration,
    ) -> Result<Answer, TransportError> {
        let (answer, unfinished) = tokio::time::timeout(timeout, self.exchange(extra, body))
            .await
            .unwrap_or(Err(TransportError::Timeout))?;
        if let Some(mut connection) = unfinished {
            if tokio::time::timeout(BODY_WAIT, connection.finish())
                .await
                .is_ok()
            {
                self.pool.checkin(connection);
            }
        }
        Ok(answer)
    }

    /// One request and its answer's head, and the HTTP/1.1 connection if
    /// its answer's body is still coming. A request the server turned away
    /// unprocessed (over HTTP/2) is sent once more, on a new connection.
    async fn exchange(
        &self,
        extra: &[(HeaderName, HeaderValue)],
        body: &Bytes,
    ) -> Result<(Answer, Option<Box<http1::Http1>>), TransportError> {
        let mut again = true;
        loop {
            match self.pool.checkout(&self.address).await? {
                Checkout::Http1(mut connection) => {
                    let head = connection.exchange(&self.http1_prefix, extra, body).await?;
                    if !connection.is_answered() {
                        return Ok((head.into(), Some(connection)));
                    }
                    self.pool.checkin(connection);
                    return Ok((head.into(), None));
                }
                Checkout::Http2(connection) => {
                    let mut request = http::Request::new(());
                    *request.method_mut() = self.method.clone();
                    *request.uri_mut() = self.absolute.clone();
                    *request.headers_mut() = with_extra(&self.http2_headers, extra);
                    match connection.exchange(request, body).await {
                        Ok(answer) => return Ok((answer, None)),
                        // Once, on the next connection (the pool makes one).
                        Err(http2::Failed::TurnedAway(_)) if again => again = false,
                        Err(http2::Failed::TurnedAway(e) | http2::Failed::Other(e)) => {
                            return Err(e);
                        }
                    }
                }
            }
        }
    }
}

/// Takes the credentials out of `url`, as an `Authorization` header.
fn basic_auth(url: &mut Url) -> Option<HeaderValue> {
    use base64::Engine as _;
    let decode = |text: &str| {
        percent_encoding::percent_decode_str(text)
            .decode_utf8_lossy()
            .into_owned()
    };
    let user = decode(url.username());
    let password = url.password().map(decode);
    if user.is_empty() && password.is_none() {
        return None;
    }
    let _ = url.set_username("");
    let _ = url.set_password(None);
    let token = base64::engine::general_purpose::STANDARD
        .encode(format!("{user}:{}", password.unwrap_or_default()));
    let mut value = HeaderValue::from_str(&format!("Basic {token}")).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// The innermost cause of a failed request ("connection reset by peer"),
/// which is what a person needs.
fn request_error(error: &(dyn std::error::Error + 'static)) -> TransportError {
    TransportError::Request(connect::root_cause(error))
}

/// A webhook behind a proxy: reqwest's client, and the URL and method it
/// is given.
#[derive(Debug)]
struct Proxied {
    client: reqwest::Client,
    url: Url,
    method: Method,
}

impl Proxied {
    async fn send(
        &self,
        headers: HeaderMap,
        body: &Bytes,
        timeout: Duration,
    ) -> Result<Answer, TransportError> {
        let sent = self
            .client
            .request(self.method.clone(), self.url.clone())
            .headers(headers)
            .timeout(timeout)
            .body(body.clone())
            .send()
            .await;
        match sent {
            Ok(response) => Ok(Answer::new(response.status(), response.headers())),
            Err(e) if e.is_timeout() => Err(TransportError::Timeout),
            Err(e) if e.is_connect() => Err(TransportError::Connect(connect::root_cause(&e))),
            Err(e) => Err(request_error(&e)),
        }
    }
}

/// HTTP/1.1 answers as an endpoint sends them, in pieces of `piece` bytes
/// (the fuzz target's entry).
#[cfg(feature = "fuzzing")]
pub(crate) fn read_answers(bytes: &[u8], piece: usize) {
    http1::read_answers(bytes, piece);
}

#[cfg(test)]
mod tests;
