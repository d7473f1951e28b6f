//! `[delivery]`: the delivery policy, and what a webhook may override of it.

use std::time::Duration;

use serde::Deserialize;

use super::{byte_size, duration};

/// `[delivery]`: the delivery policy of every webhook, unless the webhook
/// overrides a key. Also the resolved policy of one webhook.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct DeliveryConfig {
    /// One attempt without a response within this is a failure.
    #[serde(deserialize_with = "duration")]
    pub(crate) timeout: Duration,
    /// A change is retried until this long after its first attempt, then
    /// dead-lettered (or, with `block`, retried on).
    #[serde(deserialize_with = "duration")]
    pub(crate) retry_for: Duration,
    /// An optional cap on attempts, on top of `retry_for`.
    pub(crate) max_attempts: Option<u32>,
    #[serde(deserialize_with = "duration")]
    pub(crate) initial_backoff: Duration,
    #[serde(deserialize_with = "duration")]
    pub(crate) max_backoff: Duration,
    /// Statuses that are final at once (e.g. 400, 410): retrying cannot help.
    pub(crate) no_retry_statuses: Vec<u16>,
    pub(crate) on_exhausted: OnExhausted,
    /// Requests in flight to one webhook at once (different leads only).
    pub(crate) max_in_flight: usize,
    /// Whether a webhook that fails or falls behind moves its backlog to
    /// `<schema>.spool` so the slot moves on (false: the WAL holds it).
    pub(crate) spool: bool,
    /// How long a webhook may fail before it spools.
    #[serde(deserialize_with = "duration")]
    pub(crate) spool_after: Duration,
    /// WAL bytes this webhook alone may hold back before it spools.
    #[serde(deserialize_with = "byte_size")]
    pub(crate) max_retained_wal: u64,
    /// `[delivery]` only: the change bytes all stages together may hold.
    #[serde(deserialize_with = "byte_size")]
    pub(crate) memory: u64,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            timeout: Duration::from_secs(5),
            retry_for: Duration::from_secs(24 * 3600),
            max_attempts: None,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            no_retry_statuses: Vec::new(),
            on_exhausted: OnExhausted::default(),
            max_in_flight: 64,
            spool: true,
            spool_after: Duration::from_secs(30),
            max_retained_wal: 512_000_000,
            memory: 24 << 20,
        }
    }
}

/// What happens to a change whose retry window (or attempts) ran out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum OnExhausted {
    /// Written to `<schema>.dead_letters`; the stream moves on.
    #[default]
    DeadLetter,
    /// Retried at `max_backoff` forever (in the spool, if the webhook
    /// spools; else holding the slot): for receivers that must see every
    /// change, in order.
    Block,
}

/// Checks a resolved policy; `key` names where a bad value came from.
pub(super) fn validate_policy(key: &str, policy: &DeliveryConfig, problems: &mut Vec<String>) {
    if policy.timeout.is_zero() {
        problems.push(format!("{key}.timeout: must be greater than zero"));
    }
    if policy.max_attempts == Some(0) {
        problems.push(format!("{key}.max_attempts: must be at least 1"));
    }
    if policy.retry_for.is_zero() {
        problems.push(format!("{key}.retry_for: must be greater than zero"));
    }
    if policy.spool_after.is_zero() {
        problems.push(format!("{key}.spool_after: must be greater than zero"));
    }
    if policy.memory < 1 << 20 {
        problems.push(format!("{key}.memory: must be at least 1MiB"));
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
