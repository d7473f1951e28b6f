//! One HTTP attempt of one event to one webhook: used by the delivery
//! workers, by `leadhook dead-letters replay` and (through [`build`]) by
//! `leadhook webhooks test`.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, USER_AGENT};

use super::retry::{Failure, parse_retry_after};
use super::transport::{Answer, TransportError, root_cause, with_extra};
use super::{Webhook, signature};
use crate::config::WebhookConfig;

/// `User-Agent`, one of each webhook's own headers.
const USER_AGENT_VALUE: HeaderValue =
    HeaderValue::from_static(concat!("leadhook/", env!("CARGO_PKG_VERSION")));

/// Names of the headers set per attempt, parsed once, not per request.
const WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
const WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
const WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");

/// Sends `payload` with its `webhook-id` (and a fresh signature) through the
/// webhook's transport, and how long that took. `Ok` is a 2xx answer;
/// anything else is a failure for the retry rules to judge.
pub(crate) async fn attempt(
    hook: &Webhook,
    id: &HeaderValue,
    payload: &Bytes,
) -> (Result<(), Failure>, Duration) {
    let started = Instant::now();
    let extra = EventHeaders::new(hook, id, payload);
    let result = hook
        .transport
        .send(extra.as_slice(), payload, hook.policy.timeout)
        .await;
    let took = started.elapsed();
    hook.metrics.duration.record(took);
    let outcome = match result {
        Ok(answer) if answer.status.is_success() => Ok(()),
        Ok(answer) => Err(status_failure(hook, &answer)),
        Err(e) => Err(failure_of(e)),
    };
    let label = match &outcome {
        Ok(()) => "success",
        Err(failure) => failure.result_label(),
    };
    hook.metrics.attempts(label).increment(1);
    (outcome, took)
}

/// The headers every request of `hook` has: `Content-Type`, its own
/// (but those each attempt sets, see [`EventHeaders`]), then leadhook's
/// `User-Agent` and `Accept: */*`, as each request always said. Its
/// transport is made with them (and encodes them once).
pub(crate) fn own_headers(hook: &WebhookConfig) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    for (name, value) in &hook.headers {
        if ![WEBHOOK_ID, WEBHOOK_TIMESTAMP, WEBHOOK_SIGNATURE].contains(name) {
            headers.insert(name.clone(), value.expose().clone());
        }
    }
    headers.insert(USER_AGENT, USER_AGENT_VALUE);
    headers.insert(ACCEPT, HeaderValue::from_static("*/*"));
    headers
}

/// The headers of one attempt beyond the webhook's own: the event's `webhook-id` and, when the webhook
/// has a secret, a signature made now with its timestamp. The one place
/// they are made, so a test event goes out exactly as a real delivery
/// does. On the stack: an attempt allocates no header map.
struct EventHeaders {
    pairs: [(HeaderName, HeaderValue); 3],
    len: usize,
}

impl EventHeaders {
    fn new(hook: &Webhook, id: &HeaderValue, payload: &Bytes) -> EventHeaders {
        let unset = || (WEBHOOK_SIGNATURE, HeaderValue::from_static(""));
        let mut headers = EventHeaders {
            pairs: [(WEBHOOK_ID, id.clone()), unset(), unset()],
            len: 1,
        };
        let Some(key) = &hook.signing_key else {
            return headers;
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs() as i64;
        let signature = signature::sign(key, id.to_str().unwrap_or_default(), now, payload);
        headers.pairs[1] = (WEBHOOK_TIMESTAMP, HeaderValue::from(now));
        headers.len = 2;
        if let Ok(signature) = HeaderValue::from_str(&signature) {
            headers.pairs[2] = (WEBHOOK_SIGNATURE, signature);
            headers.len = 3;
        }
        headers
    }

    fn as_slice(&self) -> &[(HeaderName, HeaderValue)] {
        &self.pairs[..self.len]
    }
}

/// The request of one attempt through reqwest's `client`, for `webhooks
/// test`: the webhook's method and URL, [`headers`], its timeout and the
/// payload.
pub(crate) fn build(
    hook: &Webhook,
    client: &reqwest::Client,
    id: &HeaderValue,
    payload: &Bytes,
) -> reqwest::RequestBuilder {
    let extra = EventHeaders::new(hook, id, payload);
    client
        .request(hook.method.clone(), hook.url.clone())
        .headers(with_extra(hook.transport.headers(), extra.as_slice()))
        .timeout(hook.policy.timeout)
        .body(payload.clone())
}

/// A non-2xx answer as a failure, with what the retry rules (`Retry-After`)
/// and the logs (`Location` of a redirect) need of its headers.
fn status_failure(hook: &Webhook, answer: &Answer) -> Failure {
    fn text(value: &Option<HeaderValue>) -> Option<&str> {
        value.as_ref().and_then(|v| v.to_str().ok())
    }
    Failure::Status {
        status: answer.status.as_u16(),
        retry_after: text(&answer.retry_after)
            .and_then(|v| parse_retry_after(v, SystemTime::now())),
        // Shown as a URL of ours is (it often echoes ours, token and all).
        location: text(&answer.location).map(|to| match hook.url.join(to) {
            Ok(url) => crate::config::shown_url(&url),
            Err(_) => "an invalid URL".to_owned(),
        }),
    }
}

/// How a request that got no answer failed. A connection refused by the
/// guard (see `guard`) is `Connect`, with the guard's message as its text.
fn failure_of(error: TransportError) -> Failure {
    match error {
        TransportError::Timeout => Failure::Timeout,
        TransportError::Connect(cause) => Failure::Connect(cause),
        TransportError::Request(cause) => Failure::Other(cause),
    }
}

/// [`failure_of`] for reqwest's errors (`webhooks test`): its own message
/// names the URL (which may hold credentials), so only the innermost cause
/// is kept.
pub(super) fn unanswered(error: &reqwest::Error) -> Failure {
    if error.is_timeout() {
        Failure::Timeout
    } else if error.is_connect() {
        Failure::Connect(root_cause(error))
    } else {
        Failure::Other(root_cause(error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_headers_leave_the_event_headers_to_each_attempt() {
        let config = crate::config::Config::from_toml(
            "[database]\nurl = \"postgres://x@h/db\"\n[[webhooks]]\nname = \"a\"\nurl = \"http://h/\"\n\
             headers = { Authorization = \"Bearer t\", webhook-id = \"mine\", Webhook-Signature = \"v1,x\" }\n",
        )
        .expect("a config");
        let own = own_headers(&config.webhooks[0]);
        let names: Vec<&str> = own.keys().map(HeaderName::as_str).collect();
        assert_eq!(
            names,
            ["content-type", "authorization", "user-agent", "accept"]
        );
    }
}
