//! One HTTP attempt of one event to one webhook: used by the delivery
//! workers and by `leadhook dead-letters replay`.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use reqwest::header::{HeaderValue, LOCATION, RETRY_AFTER};

use super::retry::{Failure, parse_retry_after};
use super::{Webhook, signature};

/// Sends `payload` with its `webhook-id` (and a fresh signature). `Ok` is a
/// 2xx answer; anything else is a failure for the retry rules to judge.
pub(crate) async fn attempt(
    hook: &Webhook,
    client: &reqwest::Client,
    id: &HeaderValue,
    payload: &bytes::Bytes,
) -> Result<(), Failure> {
    let mut request = client
        .request(hook.method.clone(), hook.url.clone())
        .headers(hook.headers.clone())
        .header("webhook-id", id.clone())
        .timeout(hook.policy.timeout)
        .body(payload.clone());
    if let Some(key) = &hook.signing_key {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs() as i64;
        let signature = signature::sign(key, id.to_str().unwrap_or_default(), now, payload);
        request = request
            .header("webhook-timestamp", now)
            .header("webhook-signature", signature);
    }
    let started = Instant::now();
    let result = request.send().await;
    hook.metrics.duration.record(started.elapsed());
    let outcome = match result {
        Ok(response) if response.status().is_success() => Ok(()),
        Ok(response) => {
            let header = |name| {
                response
                    .headers()
                    .get(name)
                    .and_then(|v: &HeaderValue| v.to_str().ok())
            };
            Err(Failure::Status {
                status: response.status().as_u16(),
                retry_after: header(RETRY_AFTER)
                    .and_then(|v| parse_retry_after(v, SystemTime::now())),
                location: header(LOCATION).map(str::to_owned),
            })
        }
        Err(e) => Err(unanswered(&e)),
    };
    let label = match &outcome {
        Ok(()) => "success",
        Err(failure) => failure.result_label(),
    };
    hook.metrics.attempts(label).increment(1);
    outcome
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
