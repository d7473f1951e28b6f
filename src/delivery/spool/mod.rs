//! The spool: `<schema>.spool`, in the same database, where a webhook's
//! backlog waits while its endpoint is down or cannot keep up, so the
//! slot's confirmed position (or the outbox) moves on for everyone.
//!
//! - A webhook starts spooling when it has failed for `spool_after`, holds
//!   the others up, or alone holds back more than `max_retained_wal`
//!   ([`Reason`]). From then on its worker hands every change to the
//!   [`writer`](writer::Writer) instead of sending it, in the order each
//!   lead's changes arrived. A change counts as handled (and the position
//!   may pass it) once its row is committed.
//! - The [`drainer`](drain::Drainer) delivers the rows back, oldest first,
//!   through the same lanes and gate as live deliveries, deleting each row
//!   when it is delivered or dead-lettered. When it finds none left and
//!   every row the worker handed on had been written, the webhook goes
//!   live again.
//! - Rows outlive the process: a session that finds rows for a webhook
//!   starts it spooling, so its later changes still queue behind them.

pub(super) mod drain;
pub(crate) mod store;
pub(crate) mod writer;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use tokio::sync::watch;

use super::{Event, Webhook};

/// Why a webhook started spooling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    /// Every attempt failed for `spool_after`.
    Failing,
    /// Its full queue held the other webhooks up.
    HoldingUp,
    /// Its queue filled while its endpoint was failing.
    FullWhileFailing,
    /// It alone held back more WAL than `max_retained_wal`.
    RetainedWal,
    /// It was failing while the memory budget was spent, holding the
    /// source (and so everyone) up.
    Memory,
    /// A change of it stuck retrying held so many later ones unconfirmed
    /// that the source was about to pause for everyone.
    Backlog,
    /// The spool already had rows for it when the session started.
    Rows,
    /// `leadhook webhooks pause`: its changes wait in the spool.
    Paused,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Reason::Failing => "its endpoint has been failing for spool_after",
            Reason::HoldingUp => "it cannot keep up and was holding the other webhooks up",
            Reason::FullWhileFailing => "its endpoint is failing and its queue is full",
            Reason::RetainedWal => "it alone held back more WAL than max_retained_wal",
            Reason::Memory => "it was failing while [delivery] memory was spent",
            Reason::Backlog => {
                "a change stuck retrying holds back half the unconfirmed changes the stream allows"
            }
            Reason::Rows => "the spool has rows for it from before",
            Reason::Paused => "it is paused (leadhook webhooks resume NAME delivers what waits)",
        })
    }
}

/// One webhook's spooling state, kept across sessions.
pub(crate) struct SpoolState {
    /// Whether its changes go to the spool; the worker and its retrying
    /// deliveries watch it.
    spooling: watch::Sender<bool>,
    depth: metrics::Gauge,
    oldest: metrics::Gauge,
    /// Rows in the spool, as far as this process knows (seeded from the
    /// table at each session's start).
    rows: AtomicU64,
}

impl std::fmt::Debug for SpoolState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpoolState")
            .field("spooling", &*self.spooling.borrow())
            .field("rows", &self.rows)
            .finish()
    }
}

impl SpoolState {
    pub(crate) fn new(name: &str) -> Self {
        let state = SpoolState {
            spooling: watch::Sender::new(false),
            depth: metrics::gauge!("leadhook_spool_depth", "webhook" => name.to_owned()),
            oldest: metrics::gauge!("leadhook_spool_oldest_seconds", "webhook" => name.to_owned()),
            rows: AtomicU64::new(0),
        };
        state.depth.set(0.0);
        state.oldest.set(0.0);
        state
    }

    pub(crate) fn is_spooling(&self) -> bool {
        *self.spooling.borrow()
    }

    /// Rows in the spool for it, as far as this process knows.
    pub(crate) fn rows(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }

    /// Starts spooling; false if it already was.
    pub(crate) fn start(&self) -> bool {
        self.spooling
            .send_if_modified(|on| !std::mem::replace(on, true))
    }

    pub(super) fn stop(&self) {
        self.spooling.send_replace(false);
        self.oldest.set(0.0);
    }

    /// Resolves when spooling starts (at once if it has).
    pub(super) fn watch(&self) -> watch::Receiver<bool> {
        self.spooling.subscribe()
    }

    pub(super) fn set_rows(&self, rows: u64) {
        self.rows.store(rows, Ordering::Relaxed);
        self.depth.set(rows as f64);
    }

    pub(super) fn add_rows(&self, added: u64) {
        let rows = self.rows.fetch_add(added, Ordering::Relaxed) + added;
        self.depth.set(rows as f64);
    }

    pub(super) fn remove_rows(&self, removed: u64) {
        let before = self
            .rows
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |rows| {
                Some(rows.saturating_sub(removed))
            })
            .unwrap_or_default();
        self.depth.set(before.saturating_sub(removed) as f64);
    }

    pub(super) fn show_oldest(&self, seconds: f64) {
        self.oldest.set(seconds);
    }
}

/// A change on its way into the spool.
pub(super) struct Entry {
    /// The webhook, and its index in the checkpoint.
    pub(super) index: usize,
    pub(super) hook: Arc<Webhook>,
    pub(super) event: Arc<Event>,
    /// Its first attempt and the attempts so far, if it was tried live.
    pub(super) tried: Option<(SystemTime, u32)>,
    /// Bumped by the writer once the row is committed (see [`drain`]).
    pub(super) written: Arc<AtomicU64>,
}

#[cfg(test)]
mod tests;
