//! What the status page (`GET /`) and `GET /api/status` show: a snapshot
//! the sidecar publishes every couple of seconds (see `sidecar::status`),
//! so a request reads memory and never the database. Only what is safe to
//! show goes in: a webhook's URL without credentials or query, never its
//! headers or secret.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::Serialize;

/// The sidecar as the page shows it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Status {
    pub(crate) version: &'static str,
    /// When the snapshot was taken.
    #[serde(serialize_with = "rfc3339")]
    pub(crate) taken_at: SystemTime,
    pub(crate) source: SourceStatus,
    /// The minutes `delivered_recently`, `failed_recently` and the lag
    /// quantiles cover.
    pub(crate) window_minutes: usize,
    pub(crate) webhooks: Vec<WebhookStatus>,
}

/// Where the changes come from.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SourceStatus {
    /// `replication` or `notify`.
    pub(crate) mode: &'static str,
    pub(crate) table: String,
    /// The replication slot (replication mode only).
    pub(crate) slot: Option<String>,
    /// Streaming (or delivering from the outbox): the active instance.
    pub(crate) connected: bool,
    /// Why not, when not: starting, a standby, a lost connection…
    pub(crate) not_ready: Option<String>,
    /// The server's WAL position minus the one confirmed (replication mode,
    /// once measured).
    pub(crate) lag_bytes: Option<u64>,
}

/// One webhook.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct WebhookStatus {
    pub(crate) name: String,
    /// `file` or `table`.
    pub(crate) origin: &'static str,
    /// Scheme, host, port and path: no credentials, no query.
    pub(crate) url: String,
    pub(crate) method: String,
    /// healthy, failing, open, spooling, paused, disabled or invalid.
    pub(crate) state: &'static str,
    #[serde(serialize_with = "rfc3339_or_null")]
    pub(crate) last_success_at: Option<SystemTime>,
    #[serde(serialize_with = "rfc3339_or_null")]
    pub(crate) last_failure_at: Option<SystemTime>,
    /// The last failure in short: a status, or what went wrong.
    pub(crate) last_failure: Option<String>,
    pub(crate) delivered_recently: u64,
    pub(crate) failed_recently: u64,
    pub(crate) lag_p50_seconds: Option<f64>,
    pub(crate) lag_p99_seconds: Option<f64>,
    pub(crate) in_flight: u64,
    /// Changes waiting in the spool.
    pub(crate) spooled: u64,
    /// Dead letters stored (read every few seconds; `None` until read).
    pub(crate) dead_letters: Option<i64>,
    /// Why an invalid registry row is skipped.
    pub(crate) problem: Option<String>,
}

/// The latest snapshot, shared by the sidecar (which writes it) and the
/// admin endpoint (which shows it).
#[derive(Debug, Default)]
pub(crate) struct StatusBoard(Mutex<Option<Arc<Status>>>);

impl StatusBoard {
    pub(crate) fn publish(&self, status: Status) {
        if let Ok(mut latest) = self.0.lock() {
            *latest = Some(Arc::new(status));
        }
    }

    /// `None` until the sidecar's first snapshot (a second after start).
    pub(crate) fn latest(&self) -> Option<Arc<Status>> {
        self.0.lock().ok().and_then(|latest| latest.clone())
    }
}

/// RFC 3339 to the second, UTC: what the page and the JSON show of a time.
pub(super) fn timestamp(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

fn rfc3339<S: serde::Serializer>(at: &SystemTime, to: S) -> Result<S::Ok, S::Error> {
    to.serialize_str(&timestamp(*at))
}

fn rfc3339_or_null<S: serde::Serializer>(
    at: &Option<SystemTime>,
    to: S,
) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => rfc3339(at, to),
        None => to.serialize_none(),
    }
}
