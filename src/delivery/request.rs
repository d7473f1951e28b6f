//! One HTTP attempt of one event to one webhook: used by the delivery
//! workers, by `leadhook dead-letters replay` and (through [`build`]) by
//! `leadhook webhooks test`.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, LOCATION, RETRY_AFTER};

use super::retry::{Failure, parse_retry_after};
use super::transport::{Answer, TransportError, root_cause};
use super::{Webhook, signature};

/// `User-Agent`, set in each webhook's headers (see `Webhook::new`).
pub(super) const USER_AGENT_VALUE: HeaderValue =
    HeaderValue::from_static(concat!("leadhook/", env!("CARGO_PKG_VERSION")));

/// Names of the headers set per attempt, parsed once, not per request.
const WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
const WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
const WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");

/// Sends `payload` with its `webhook-id` (and a fresh signature) through the
/// webhook's transport. `Ok` is a 2xx answer; anything else is a failure
/// for the retry rules to judge.
pub(crate) async fn attempt(
    hook: &Webhook,
    id: &HeaderValue,
    payload: &Bytes,
) -> Result<(), Failure> {
    let started = Instant::now();
    let result = hook
        .transport
        .send(
            &hook.method,
            || headers(hook, id, payload),
            payload,
            hook.policy.timeout,
        )
        .await;
    hook.metrics.duration.record(started.elapsed());
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
    outcome
}

/// The headers of one attempt: the webhook's (`Content-Type`, its own,
/// leadhook's `User-Agent`, `Accept: */*` as reqwest sent), the event's
/// `webhook-id` and, when the webhook has a secret, a signature made now.
/// The one place they are put together, so a test event goes out exactly
/// as a real delivery does.
fn headers(hook: &Webhook, id: &HeaderValue, payload: &Bytes) -> HeaderMap {
    let mut headers = hook.headers.clone();
    headers.insert(WEBHOOK_ID, id.clone());
    let Some(key) = &hook.signing_key else {
        return headers;
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64;
    let signature = signature::sign(key, id.to_str().unwrap_or_default(), now, payload);
    headers.insert(WEBHOOK_TIMESTAMP, HeaderValue::from(now));
    if let Ok(signature) = HeaderValue::from_str(&signature) {
        headers.insert(WEBHOOK_SIGNATURE, signature);
    }
    headers
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
    client
        .request(hook.method.clone(), hook.url.clone())
        .headers(headers(hook, id, payload))
        .timeout(hook.policy.timeout)
        .body(payload.clone())
}

/// A non-2xx answer as a failure, with what the retry rules (`Retry-After`)
/// and the logs (`Location` of a redirect) need of its headers.
fn status_failure(hook: &Webhook, answer: &Answer) -> Failure {
    let header = |name| {
        answer
            .headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    Failure::Status {
        status: answer.status.as_u16(),
        retry_after: header(RETRY_AFTER).and_then(|v| parse_retry_after(v, SystemTime::now())),
        // Shown as a URL of ours is (it often echoes ours, token and all).
        location: header(LOCATION).map(|to| match hook.url.join(to) {
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
