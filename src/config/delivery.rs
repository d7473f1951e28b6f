//! `[delivery]`: the delivery policy, and what a webhook may override of it.

use std::time::Duration;

use serde::Deserialize;

use super::duration;

/// `[delivery]`: the delivery policy of every webhook, unless the webhook
/// overrides a key. Also the resolved policy of one webhook.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct DeliveryConfig {
    /// One attempt without a response within this is a failure.
    #[serde(deserialize_with = "duration")]
    pub(crate) timeout: Duration,
    /// Attempts before a change is dead-lettered (or, with `block`, retried on).
    pub(crate) max_attempts: u32,
    #[serde(deserialize_with = "duration")]
    pub(crate) initial_backoff: Duration,
    #[serde(deserialize_with = "duration")]
    pub(crate) max_backoff: Duration,
    /// Statuses that are final at once (e.g. 400, 410): retrying cannot help.
    pub(crate) no_retry_statuses: Vec<u16>,
    pub(crate) on_exhausted: OnExhausted,
    /// Requests in flight to one webhook at once (different leads only).
    pub(crate) max_in_flight: usize,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            timeout: Duration::from_secs(5),
            max_attempts: 12,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            no_retry_statuses: Vec::new(),
            on_exhausted: OnExhausted::default(),
            max_in_flight: 64,
        }
    }
}

/// What happens to a change that used all its attempts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum OnExhausted {
    /// Written to `<schema>.dead_letters`; the stream moves on.
    #[default]
    DeadLetter,
    /// Retried at `max_backoff` forever, holding the slot: for receivers
    /// that must see every change, in order.
    Block,
}

/// Checks a resolved policy; `key` names where a bad value came from.
pub(super) fn validate_policy(key: &str, policy: &DeliveryConfig, problems: &mut Vec<String>) {
    if policy.timeout.is_zero() {
        problems.push(format!("{key}.timeout: must be greater than zero"));
    }
    if policy.max_attempts == 0 {
        problems.push(format!("{key}.max_attempts: must be at least 1"));
    }
    if policy.max_in_flight == 0 {
        problems.push(format!("{key}.max_in_flight: must be at least 1"));
    }
    if policy.initial_backoff > policy.max_backoff {
        problems.push(format!(
            "{key}.initial_backoff: must not exceed max_backoff ({:?})",
            policy.max_backoff
        ));
    }
    for status in &policy.no_retry_statuses {
        if !(100..=599).contains(status) {
            problems.push(format!(
                "{key}.no_retry_statuses: {status} is not an HTTP status"
            ));
        }
    }
}
