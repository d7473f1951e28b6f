//! One HTTP attempt of one event to one webhook: used by the delivery
//! workers, by `leadhook dead-letters replay` and (through [`build`]) by
//! `leadhook webhooks test`.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use reqwest::header::{HeaderValue, LOCATION, RETRY_AFTER};

use super::retry::{Failure, parse_retry_after};
use super::{Webhook, signature};

/// Sends `payload` with its `webhook-id` (and a fresh signature). `Ok` is a
/// 2xx answer; anything else is a failure for the retry rules to judge.
pub(crate) async fn attempt(
    hook: &Webhook,
    client: &reqwest::Client,
    id: &HeaderValue,
    payload: &Bytes,
) -> Result<(), Failure> {
    let request = build(hook, client, id, payload);
    let started = Instant::now();
    let result = request.send().await;
    hook.metrics.duration.record(started.elapsed());
    let outcome = match result {
        Ok(response) if response.status().is_success() => Ok(()),
        Ok(response) => Err(status_failure(&response)),
        Err(e) => Err(unanswered(&e)),
    };
    let label = match &outcome {
        Ok(()) => "success",
        Err(failure) => failure.result_label(),
    };
    hook.metrics.attempts(label).increment(1);
    outcome
}

/// The request of one attempt: the webhook's method, URL and headers, the
/// event's `webhook-id`, the webhook's timeout, a signature made now (when
/// the webhook has a secret) and the payload. The one place a request is
/// built, so a test event goes out exactly as a real delivery does.
pub(crate) fn build(
    hook: &Webhook,
    client: &reqwest::Client,
    id: &HeaderValue,
    payload: &Bytes,
) -> reqwest::RequestBuilder {
    let request = client
        .request(hook.method.clone(), hook.url.clone())
        .headers(hook.headers.clone())
        .header("webhook-id", id.clone())
        .timeout(hook.policy.timeout)
        .body(payload.clone());
    let Some(key) = &hook.signing_key else {
        return request;
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64;
    let signature = signature::sign(key, id.to_str().unwrap_or_default(), now, payload);
    request
        .header("webhook-timestamp", now)
        .header("webhook-signature", signature)
}

/// A non-2xx answer as a failure, with what the retry rules (`Retry-After`)
/// and the logs (`Location` of a redirect) need of its headers.
fn status_failure(response: &reqwest::Response) -> Failure {
    let header = |name| {
        response
            .headers()
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    Failure::Status {
        status: response.status().as_u16(),
        retry_after: header(RETRY_AFTER).and_then(|v| parse_retry_after(v, SystemTime::now())),
        // Shown as a URL of ours is (it often echoes ours, token and all).
        location: header(LOCATION).map(|to| match response.url().join(to) {
            Ok(url) => crate::config::shown_url(&url),
            Err(_) => "an invalid URL".to_owned(),
        }),
    }
}

/// How a request that got no answer failed. A connection refused by
/// `guard::PublicOnly` is `Connect`, with the guard's message as its text.
pub(super) fn unanswered(error: &reqwest::Error) -> Failure {
    if error.is_timeout() {
        Failure::Timeout
    } else if error.is_connect() {
        Failure::Connect(root_cause(error))
    } else {
        Failure::Other(root_cause(error))
    }
}

/// reqwest's own message names the URL (which may hold credentials); the
/// innermost cause ("Connection refused") is what a person needs.
fn root_cause(error: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}
