//! How a webhook's requests reach its endpoint.
//!
//! Deliveries are the hot path: one request per event. So each webhook gets
//! its own [`Endpoint`], prepared once from its URL (the request target,
//! the `Host` header, the TLS name and ALPN, the network rule), with its
//! own pool of connections over hyper's `client::conn`. An HTTP/1.1
//! connection is driven by the task whose request it carries, so a request
//! costs that one task's wake-ups and no URL parsing, no pool keyed by
//! host and no middleware. An HTTP/2 connection runs in a task of its own
//! (every request in flight shares it) and pings the server; each request
//! opens its stream on it over `h2` directly and awaits its answer there.
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
use http_body_util::{BodyExt, Full};
use reqwest::header::{HOST, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode, Url};

use crate::config::WebhookConfig;
pub(crate) use connect::root_cause;
use pool::{Checkout, Pool};

/// The request body: the payload, shared, never copied.
type Body = Full<Bytes>;

/// How much of an answer's body is read to keep its connection: more, and
/// the connection is closed instead (the answer itself is never used).
const BODY_KEPT: usize = 64 * 1024;

/// One webhook's way to its endpoint.
#[derive(Debug)]
pub(crate) enum Transport {
    Direct(Arc<Endpoint>),
    /// Through the proxy the environment names for this URL.
    Proxied(Proxied),
}

/// The answer to a request: all that delivery judges.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
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
    /// The transport of `hook`: reqwest's `proxied` client when a proxy
    /// applies to its URL (built only then), its own endpoint otherwise.
    pub(crate) fn new(
        hook: &WebhookConfig,
        proxied: impl FnOnce() -> Result<reqwest::Client, reqwest::Error>,
    ) -> Result<Transport, reqwest::Error> {
        let url = hook.url.expose();
        if !hook.public_only && proxy_applies(url) {
            let client = proxied()?;
            let url = url.clone();
            return Ok(Transport::Proxied(Proxied { client, url }));
        }
        Ok(Transport::Direct(Arc::new(Endpoint::new(url, hook))))
    }

    /// Sends one request; `headers` makes all of its headers but `Host`
    /// (once, or twice if the server turned it away unprocessed).
    /// Everything, connecting included, happens within `timeout`.
    pub(crate) async fn send(
        &self,
        method: &Method,
        headers: impl Fn() -> HeaderMap,
        body: &Bytes,
        timeout: Duration,
    ) -> Result<Answer, TransportError> {
        match self {
            Transport::Direct(endpoint) => {
                tokio::time::timeout(timeout, endpoint.send(method, headers, body))
                    .await
                    .unwrap_or(Err(TransportError::Timeout))
            }
            // Boxed: reqwest's future is large, and rarely needed.
            Transport::Proxied(proxied) => {
                Box::pin(proxied.send(method, headers(), body, timeout)).await
            }
        }
    }
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

/// A webhook's endpoint: what its URL says, prepared once, and its
/// connections.
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
    address: connect::Address,
    pool: Pool,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Endpoint")
    }
}

impl Endpoint {
    fn new(url: &Url, hook: &WebhookConfig) -> Endpoint {
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
        Endpoint {
            target,
            absolute,
            host_header,
            authorization,
            address,
            pool: Pool::default(),
        }
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

    /// `headers` makes the request's headers: again when a request the
    /// server turned away unprocessed is sent once more.
    async fn send(
        &self,
        method: &Method,
        headers: impl Fn() -> HeaderMap,
        body: &Bytes,
    ) -> Result<Answer, TransportError> {
        let mut again = true;
        loop {
            let mut headers = headers();
            self.authorize(&mut headers);
            match self.pool.checkout(&self.address).await? {
                Checkout::Http1(mut connection) => {
                    headers.insert(HOST, self.host_header.clone());
                    let mut request = http::Request::new(Full::new(body.clone()));
                    *request.method_mut() = method.clone();
                    *request.uri_mut() = self.target.clone();
                    *request.headers_mut() = headers;
                    let answer = connection.exchange(request).await?;
                    self.pool.checkin(connection);
                    return Ok(answer);
                }
                Checkout::Http2(connection) => {
                    let mut request = http::Request::new(());
                    *request.method_mut() = method.clone();
                    *request.uri_mut() = self.absolute.clone();
                    *request.headers_mut() = headers;
                    match connection.exchange(request, body).await {
                        Ok(answer) => return Ok(answer),
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

/// Reads an answer's body to its end, or up to [`BODY_KEPT`]: `true` when
/// it ended (so the connection may serve the next request).
async fn drain(mut body: hyper::body::Incoming) -> bool {
    let mut read = 0;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { return false };
        if let Some(data) = frame.data_ref() {
            read += data.len();
            if read > BODY_KEPT {
                return false;
            }
        }
    }
    true
}

/// The innermost cause of a failed request ("connection reset by peer"),
/// which is what a person needs.
fn request_error(error: &(dyn std::error::Error + 'static)) -> TransportError {
    TransportError::Request(connect::root_cause(error))
}

/// A webhook behind a proxy: reqwest's client, and the URL it is given.
#[derive(Debug)]
pub(crate) struct Proxied {
    client: reqwest::Client,
    url: Url,
}

impl Proxied {
    async fn send(
        &self,
        method: &Method,
        headers: HeaderMap,
        body: &Bytes,
        timeout: Duration,
    ) -> Result<Answer, TransportError> {
        let sent = self
            .client
            .request(method.clone(), self.url.clone())
            .headers(headers)
            .timeout(timeout)
            .body(body.clone())
            .send()
            .await;
        match sent {
            Ok(response) => Ok(Answer {
                status: response.status(),
                headers: response.headers().clone(),
            }),
            Err(e) if e.is_timeout() => Err(TransportError::Timeout),
            Err(e) if e.is_connect() => Err(TransportError::Connect(connect::root_cause(&e))),
            Err(e) => Err(request_error(&e)),
        }
    }
}

#[cfg(test)]
mod tests;
