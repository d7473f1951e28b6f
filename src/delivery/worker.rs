//! One webhook's delivery worker: up to `max_in_flight` changes at once,
//! but the changes of one lead strictly one after another, in commit order
//! (the next starts only when the previous was delivered, dead-lettered or
//! spooled). When each may send is the webhook's [`super::gate::Gate`]'s to
//! say.
//!
//! While the webhook spools, the worker sends nothing itself: it hands
//! every change to the spool's writer (a lead's changes behind the one
//! still out, if any) and runs the drainer that delivers the rows back.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime};

use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;

use super::Event;
use super::deliver::{Delivery, Outcome, Outgoing};
use super::lanes::Lanes;
use super::spool::drain::{Drained, Drainer};
use super::spool::store::SpoolStore;
use super::spool::writer::SpoolSender;
use super::spool::{Entry, Reason};
use crate::checkpoint::Checkpoint;
use crate::memory::MemoryBudget;

/// How often the worker checks whether its webhook should spool.
const CHECK_EVERY: Duration = Duration::from_millis(250);
/// Checks in a row that find the webhook failing while the memory budget
/// is spent before it spools (2 s): the failing webhook's changes are what
/// the source waits behind.
const SPENT_CHECKS: u32 = 8;
/// How long the worker stops taking new changes so that the writer can
/// catch up and the drainer find the spool empty (see [`Running::handover`]).
const HANDOVER: Duration = Duration::from_secs(1);

pub(super) struct Worker {
    /// This webhook's index, as the checkpoint knows it.
    pub(super) index: usize,
    pub(super) delivery: Arc<Delivery>,
    pub(super) queue: mpsc::Receiver<Arc<Event>>,
    pub(super) checkpoint: Arc<Checkpoint>,
    /// Told when this webhook, set lagging, has drained its queue: the
    /// session then restarts from its position to stream its backlog again.
    pub(super) caught_up: Arc<Notify>,
    /// Where spooled changes go, and where the drainer reads them back.
    pub(super) spool: SpoolSender,
    pub(super) spool_store: Arc<SpoolStore>,
    pub(super) memory: MemoryBudget,
}

/// A worker's state while it runs.
struct Running {
    lanes: Lanes<Arc<Event>>,
    in_flight: JoinSet<(Arc<Event>, Outcome)>,
    /// The drainer, while the webhook spools (aborted with the worker).
    drainer: JoinSet<()>,
    drained: mpsc::Receiver<Drained>,
    drained_tx: mpsc::Sender<Drained>,
    /// Checks in a row that found the webhook failing and memory spent.
    spent_checks: u32,
    /// Set when the drainer found the spool empty while changes were still
    /// on their way in: under a steady inflow that is always so, so the
    /// worker takes no new changes for a moment (at most [`HANDOVER`]) and
    /// the drainer's next look can find the spool empty for good.
    handover: Option<tokio::time::Instant>,
    /// Leads with a change abandoned as the session winds down: their later
    /// changes are left for the next session too, so none overtakes it.
    abandoned: HashSet<u64>,
    /// Changes handed to the writer this session…
    forwarded: u64,
    /// …and those it has written: equal when nothing is on its way in.
    written: Arc<AtomicU64>,
}

impl Worker {
    pub(super) async fn run(mut self) {
        let hook = self.delivery.hook.clone();
        let limit = hook.policy.max_in_flight;
        let (drained_tx, drained) = mpsc::channel(1);
        let mut run = Running {
            lanes: Lanes::new(),
            in_flight: JoinSet::new(),
            drainer: JoinSet::new(),
            drained,
            drained_tx,
            spent_checks: 0,
            handover: None,
            abandoned: HashSet::new(),
            forwarded: 0,
            written: Arc::new(AtomicU64::new(0)),
        };
        if hook.spool.is_spooling() && !hook.is_paused() {
            self.start_draining(&mut run);
        }
        let mut check = tokio::time::interval(CHECK_EVERY);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Once the queue is closed (shutdown), what is in flight still finishes.
        let mut open = true;
        while open || run.lanes.held() > 0 {
            tokio::select! {
                event = self.queue.recv(), if open && run.lanes.held() < limit && run.handover.is_none() => {
                    let Some(event) = event else {
                        open = false;
                        continue;
                    };
                    self.arrived(&mut run, event).await;
                    // Those queued behind it too, without a select each.
                    while run.lanes.held() < limit && run.handover.is_none() {
                        let Ok(event) = self.queue.try_recv() else { break };
                        self.arrived(&mut run, event).await;
                    }
                }
                Some(done) = run.in_flight.join_next() => {
                    let Ok((event, outcome)) = done else { return };
                    self.finished(&mut run, event, outcome).await;
                    while let Some(done) = run.in_flight.try_join_next() {
                        let Ok((event, outcome)) = done else { return };
                        self.finished(&mut run, event, outcome).await;
                    }
                }
                Some(drained) = run.drained.recv() => {
                    let live = drained.written == run.forwarded;
                    if !live {
                        run.handover.get_or_insert_with(tokio::time::Instant::now);
                    }
                    if live {
                        run.handover = None;
                        hook.spool.stop();
                        hook.spool.set_rows(0);
                        hook.gate.show_spooling(|| hook.spool.is_spooling());
                        tracing::info!(webhook = %hook.name, "the spool is drained; delivering live again");
                    }
                    let _ = drained.reply.send(live);
                }
                _ = check.tick() => {
                    while run.drainer.try_join_next().is_some() {}
                    if run.handover.is_some_and(|since| since.elapsed() >= HANDOVER) {
                        run.handover = None;
                    }
                    if let Some(reason) = self.should_spool(&mut run) {
                        hook.start_spooling(reason);
                    }
                    // A paused webhook's drainer stops by itself once what
                    // it had on the wire is answered.
                    if !hook.is_paused() && hook.spool.is_spooling() && run.drainer.is_empty() {
                        self.start_draining(&mut run);
                    }
                }
            }
        }
    }

    /// Whether the webhook should start spooling now, and why.
    fn should_spool(&self, run: &mut Running) -> Option<Reason> {
        let hook = &self.delivery.hook;
        let policy = &hook.policy;
        if hook.spool.is_spooling() {
            return None;
        }
        if hook.is_paused() {
            return Some(Reason::Paused);
        }
        if !policy.spool {
            return None;
        }
        let failing_for = hook.gate.failing_for();
        if failing_for.is_some_and(|f| f >= policy.spool_after) {
            return Some(Reason::Failing);
        }
        if failing_for.is_some() && self.memory.is_nearly_spent() {
            run.spent_checks += 1;
            if run.spent_checks >= SPENT_CHECKS {
                return Some(Reason::Memory);
            }
        } else {
            run.spent_checks = 0;
        }
        if self.checkpoint.held_up_by(self.index) {
            return Some(Reason::Backlog);
        }
        let limit = self.checkpoint.retained_wal_limit(policy.max_retained_wal);
        if self.checkpoint.held_back_alone(self.index) > limit {
            return Some(Reason::RetainedWal);
        }
        None
    }

    fn start_draining(&self, run: &mut Running) {
        let drainer = Drainer {
            delivery: self.delivery.clone(),
            store: self.spool_store.clone(),
            written: run.written.clone(),
            worker: run.drained_tx.clone(),
            memory: self.memory.clone(),
        };
        run.drainer.spawn(drainer.run());
    }

    /// A change from the queue: it starts, waits behind its lead's change
    /// still out, or goes to the spool.
    async fn arrived(&self, run: &mut Running, event: Arc<Event>) {
        let hook = &self.delivery.hook;
        if hook.is_paused() {
            // At once, not at the next check: nothing is sent once the
            // pause is known.
            hook.start_spooling(Reason::Paused);
        }
        if run.abandoned.contains(&event.key) {
            return;
        }
        if hook.spool.is_spooling() && !run.lanes.is_busy(event.key) {
            self.forward(run, event, None).await;
        } else if let Some(event) = run.lanes.arrive(event.key, event) {
            self.start(run, event, None);
        }
    }

    fn start(&self, run: &mut Running, event: Arc<Event>, tried: Option<(SystemTime, u32)>) {
        let delivery = self.delivery.clone();
        run.in_flight.spawn(async move {
            let change = Outgoing {
                id: &event.id,
                payload: &event.payload,
                commit_time: event.commit_time,
                tried,
            };
            // Also without `spool`: a pause sends the webhook to the spool.
            // Boxed: the delivery's future is kilobytes (the HTTP client's
            // state), and unboxed it would be copied into the task and out
            // again on every spawn and completion.
            let outcome = Box::pin(delivery.deliver(change, true)).await;
            (event, outcome)
        });
    }

    /// A live delivery ended: the change is handled, or goes to the spool;
    /// the next change of its lead starts, or follows it there.
    async fn finished(&self, run: &mut Running, event: Arc<Event>, outcome: Outcome) {
        let key = event.key;
        let spooling = self.delivery.hook.spool.is_spooling();
        match outcome {
            Outcome::Delivered | Outcome::DeadLettered => {
                self.checkpoint.handled(self.index, event.tx);
            }
            // The session winds down: the next one sends it again, and the
            // lead's later changes after it.
            Outcome::Abandoned => {
                run.abandoned.insert(key);
                run.lanes.close(key);
                return;
            }
            Outcome::Spool(tried) if spooling => self.forward(run, event, tried).await,
            // The spool drained before this change got there: it stays live,
            // still the one out for its lead.
            Outcome::Spool(tried) => return self.start(run, event, tried),
        }
        if spooling {
            for waiting in run.lanes.close(key) {
                self.forward(run, waiting, None).await;
            }
        } else if let Some(next) = run.lanes.finished(key) {
            self.start(run, next, None);
        }
        if run.lanes.held() == 0 && self.queue.is_empty() && self.checkpoint.is_lagging(self.index)
        {
            self.caught_up.notify_one();
        }
    }

    /// Hands `event` to the spool's writer, which reports it handled once
    /// written.
    async fn forward(
        &self,
        run: &mut Running,
        event: Arc<Event>,
        tried: Option<(SystemTime, u32)>,
    ) {
        let entry = Entry {
            index: self.index,
            hook: self.delivery.hook.clone(),
            event,
            tried,
            written: run.written.clone(),
        };
        run.forwarded += 1;
        self.spool.send(entry).await;
    }
}
