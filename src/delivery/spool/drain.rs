//! Delivers a spooling webhook's rows back: oldest first, each lead's in
//! order, with the webhook's concurrency and gate, so a dead endpoint sees
//! the same single probe as live deliveries do. A row is deleted once it is
//! delivered or dead-lettered (a row delivered but not yet deleted when the
//! process dies is delivered again, with the same id).
//!
//! When no rows are left, it asks the worker whether it may stop: only if
//! every change the worker handed the writer was written before the last
//! look found the table empty. Otherwise a change is still on its way in,
//! and the webhook keeps spooling.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::store::{SpoolStore, SpooledChange};
use crate::delivery::deliver::{Delivery, Outcome, Outgoing};
use crate::delivery::lanes::Lanes;
use crate::memory::{MemoryBudget, Reservation};

/// How often to look again when the spool had nothing new.
const POLL: Duration = Duration::from_millis(100);
/// Rows deleted in one statement.
const DELETE_BATCH: usize = 256;
/// Payload bytes one look at the spool reads (beyond its first row), and
/// the drainer holds before it looks again: a dead endpoint's drainer
/// keeps little in memory.
const HELD_BYTES: usize = 2 << 20;
/// Rows held (out, or waiting behind their lead without their payload).
const MAX_HELD_ROWS: usize = 10_000;
/// The longest wait between tries while the spool cannot be read.
const MAX_ERROR_DELAY: Duration = Duration::from_secs(30);
/// How often `leadhook_spool_oldest_seconds` is refreshed.
const OLDEST_EVERY: Duration = Duration::from_secs(1);

/// The drainer asks its worker whether it may stop: `written` is what the
/// writer had written before the drainer found the spool empty.
pub(crate) struct Drained {
    pub(crate) written: u64,
    pub(crate) reply: oneshot::Sender<bool>,
}

pub(crate) struct Drainer {
    pub(crate) delivery: Arc<Delivery>,
    pub(crate) store: Arc<SpoolStore>,
    /// Bumped by the writer for each of this webhook's rows it committed.
    pub(crate) written: Arc<AtomicU64>,
    pub(crate) worker: mpsc::Sender<Drained>,
    /// The rows read back are held under the process's budget too.
    pub(crate) memory: MemoryBudget,
}

impl Drainer {
    /// Runs until the webhook's spool is empty and the worker agrees it
    /// goes live again.
    pub(crate) async fn run(self) {
        let hook = &self.delivery.hook;
        let limit = hook.policy.max_in_flight;
        let mut lanes: Lanes<(SpooledChange, Option<Reservation>)> = Lanes::new();
        let mut in_flight: JoinSet<(u64, Option<i64>, usize)> = JoinSet::new();
        let mut held_bytes = 0;
        let mut done = Vec::new();
        let mut cursor = 0;
        let mut idle = false;
        let mut error_delay = POLL;
        let mut oldest_at = Instant::now();
        // A timer that completions do not reset: done rows are deleted, and
        // an empty spool looked at again, at least this often.
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if hook.is_paused() && in_flight.is_empty() {
                // Paused: what was on the wire is answered; the rest waits
                // for the resume (the worker starts a drainer again).
                self.delete(&mut done).await;
                return;
            }
            // Refilled by the half, not row by row: one look per row would
            // cap the drain at one database round trip per delivery.
            let room = !hook.is_paused()
                && in_flight.len() <= limit / 2
                && held_bytes < HELD_BYTES
                && lanes.held() < MAX_HELD_ROWS;
            if !idle && room {
                let written = self.written.load(Ordering::Acquire);
                let fetched = self
                    .store
                    .fetch(
                        &hook.name,
                        cursor,
                        limit - in_flight.len(),
                        HELD_BYTES - held_bytes,
                    )
                    .await;
                match fetched {
                    Ok(rows) if rows.is_empty() => {
                        error_delay = POLL;
                        if lanes.held() == 0 && self.may_stop(&mut done, written).await {
                            return;
                        }
                        idle = true;
                    }
                    Ok(rows) => {
                        error_delay = POLL;
                        for mut row in rows {
                            if lanes.is_busy(row.key) {
                                // It waits behind its lead: its payload is
                                // read again when its turn comes, so a lead
                                // stuck retrying holds ids, not payloads.
                                row.payload = bytes::Bytes::new();
                                cursor = row.row;
                                lanes.arrive(row.key, (row, None));
                                continue;
                            }
                            let Some(memory) = self.memory.try_reserve(row.payload.len()) else {
                                // The budget is spent: this row and the rest
                                // are read again later.
                                idle = true;
                                break;
                            };
                            cursor = row.row;
                            held_bytes += row.payload.len();
                            if let Some(row) = lanes.arrive(row.key, (row, Some(memory))) {
                                self.start(&mut in_flight, row);
                            }
                        }
                    }
                    Err(e) => {
                        tracing::error!(webhook = %hook.name, spool = %self.store.table(), error = %e, retry_in = ?error_delay,
                            "cannot read the spool; trying again");
                        self.store.reset().await;
                        tokio::time::sleep(error_delay).await;
                        error_delay = (error_delay * 2).min(MAX_ERROR_DELAY);
                    }
                }
            }
            if oldest_at.elapsed() >= OLDEST_EVERY {
                oldest_at = Instant::now();
                if let Ok(age) = self.store.oldest(&hook.name).await {
                    hook.spool
                        .show_oldest(age.unwrap_or_default().as_secs_f64());
                }
            }
            tokio::select! {
                Some(finished) = in_flight.join_next() => {
                    let Ok((key, row, bytes)) = finished else { return };
                    held_bytes -= bytes;
                    done.extend(row);
                    if let Some(next) = lanes.finished(key) {
                        self.start(&mut in_flight, next);
                    }
                    if lanes.held() == 0 {
                        // Caught up: look at once, so that under a steady
                        // inflow a look can find the spool empty with
                        // nothing out, which is when it may stop.
                        idle = false;
                    }
                    if done.len() >= DELETE_BATCH {
                        self.delete(&mut done).await;
                    }
                }
                _ = tick.tick() => {
                    idle = false;
                    self.delete(&mut done).await;
                }
            }
        }
    }

    /// Delivers one row; one that waited behind its lead has its payload
    /// read again first. The task returns the row to delete (none when the
    /// delivery was abandoned) and the bytes it held of `held_bytes` (none
    /// for a row read again).
    fn start(
        &self,
        in_flight: &mut JoinSet<(u64, Option<i64>, usize)>,
        (mut row, memory): (SpooledChange, Option<Reservation>),
    ) {
        let delivery = self.delivery.clone();
        let store = self.store.clone();
        let budget = self.memory.clone();
        in_flight.spawn(async move {
            let counted = if memory.is_some() {
                row.payload.len()
            } else {
                0
            };
            let _memory = match memory {
                Some(memory) => memory,
                None => {
                    match reload(&store, &delivery.hook.name, row.row).await {
                        Some(payload) => row.payload = payload,
                        // Gone (deleted by hand): nothing to deliver.
                        None => return (row.key, Some(row.row), 0),
                    }
                    budget.reserve(row.payload.len()).await
                }
            };
            let change = Outgoing {
                id: &row.id,
                payload: &row.payload,
                commit_time: row.commit_time,
                tried: Some((row.first_attempt, row.attempts)),
            };
            // Not spooled again: it ends delivered or dead-lettered (or is
            // left for the next session, when this one winds down).
            // Boxed for the same reason as a live delivery (see `worker`).
            let outcome = Box::pin(delivery.deliver(change, false)).await;
            let done = (outcome != Outcome::Abandoned).then_some(row.row);
            (row.key, done, counted)
        });
    }

    /// Deletes the rows done so far; kept for the next try if that fails.
    async fn delete(&self, done: &mut Vec<i64>) {
        if done.is_empty() {
            return;
        }
        let hook = &self.delivery.hook;
        match self.store.delete(&hook.name, done).await {
            Ok(()) => {
                hook.spool.remove_rows(done.len() as u64);
                done.clear();
            }
            Err(e) => {
                tracing::warn!(webhook = %hook.name, spool = %self.store.table(), error = %e,
                    "cannot delete delivered rows from the spool yet; trying again");
                self.store.reset().await;
            }
        }
    }

    /// Whether the worker lets the webhook go live: nothing it handed on
    /// can still be on its way into the table.
    async fn may_stop(&self, done: &mut Vec<i64>, written: u64) -> bool {
        self.delete(done).await;
        if !done.is_empty() {
            return false;
        }
        let (reply, answer) = oneshot::channel();
        if self.worker.send(Drained { written, reply }).await.is_err() {
            return true;
        }
        answer.await.unwrap_or(true)
    }
}

/// A row's payload, read again (retrying while the database is away);
/// `None` if the row is gone.
async fn reload(store: &SpoolStore, webhook: &str, row: i64) -> Option<bytes::Bytes> {
    let mut delay = POLL;
    loop {
        match store.payload(webhook, row).await {
            Ok(payload) => return payload,
            Err(e) => {
                tracing::error!(%webhook, spool = %store.table(), error = %e, retry_in = ?delay,
                    "cannot read a row of the spool again; trying again");
                store.reset().await;
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_ERROR_DELAY);
            }
        }
    }
}
