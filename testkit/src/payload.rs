//! Reading what arrived: payloads, the scores tests number leads by, ids.

use std::collections::HashSet;
use std::time::Duration;

use crate::receiver::{ReceivedRequest, Receiver};
use crate::sidecar::Sidecar;
use crate::wait::eventually_within;

/// How long the waits for whole sets of leads allow: they follow restarts.
const SCORES_WAIT: Duration = Duration::from_secs(90);

/// The `data` object of a delivered payload.
pub fn data(request: &ReceivedRequest) -> serde_json::Value {
    let body: serde_json::Value = serde_json::from_slice(&request.body).expect("payload is JSON");
    body["data"].clone()
}

/// The distinct `score`s among delivered payloads.
pub fn scores_of(got: &[ReceivedRequest]) -> HashSet<i64> {
    got.iter()
        .map(|r| data(r)["score"].as_i64().expect("score"))
        .collect()
}

/// The `webhook-id`s of what arrived.
pub fn ids_of(got: &[ReceivedRequest]) -> HashSet<String> {
    got.iter()
        .map(|r| r.header("webhook-id").expect("webhook-id").to_owned())
        .collect()
}

/// Waits until every score 1..=n has arrived at `path` (redeliveries make
/// plain counts ambiguous); returns everything that arrived there.
pub async fn wait_for_scores(
    receiver: &Receiver,
    path: &str,
    n: i64,
    sidecar: &Sidecar,
) -> Vec<ReceivedRequest> {
    wait_for_these_scores(receiver, path, 1..=n, sidecar).await
}

/// Waits until every score in `scores` has arrived at `path`; returns
/// everything that arrived there.
pub async fn wait_for_these_scores(
    receiver: &Receiver,
    path: &str,
    scores: impl IntoIterator<Item = i64>,
    sidecar: &Sidecar,
) -> Vec<ReceivedRequest> {
    let wanted: Vec<i64> = scores.into_iter().collect();
    let missing = || {
        let arrived = scores_of(&receiver.requests_to(path));
        let missing: Vec<i64> = wanted
            .iter()
            .copied()
            .filter(|s| !arrived.contains(s))
            .collect();
        missing
    };
    eventually_within(
        SCORES_WAIT,
        "changes lost",
        || {
            format!(
                "scores {:?} never arrived; log:\n{}",
                missing(),
                sidecar.log()
            )
        },
        async || missing().is_empty(),
    )
    .await;
    receiver.requests_to(path)
}
