//! One webhook's delivery worker: up to `max_in_flight` changes at once,
//! but the changes of one lead strictly one after another, in commit order
//! (the next starts only when the previous was delivered or dead-lettered).
//! When each may send is the webhook's [`super::gate::Gate`]'s to say.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;

use super::gate::Admission;
use super::retry::{self, Next};
use super::{Event, Webhook, request};
use crate::checkpoint::Checkpoint;
use crate::dead_letter::{DeadLetter, DeadLetterStore};

pub(super) struct Worker {
    /// This webhook's index, as the checkpoint knows it.
    pub(super) index: usize,
    pub(super) hook: Arc<Webhook>,
    pub(super) client: reqwest::Client,
    pub(super) queue: mpsc::Receiver<Arc<Event>>,
    pub(super) checkpoint: Arc<Checkpoint>,
    pub(super) dead_letters: Arc<DeadLetterStore>,
    /// Told when this webhook, set lagging, has drained its queue: the
    /// session then restarts from its position to stream its backlog again.
    pub(super) caught_up: Arc<Notify>,
}

impl Worker {
    pub(super) async fn run(mut self) {
        let limit = self.hook.policy.max_in_flight;
        let mut in_flight = JoinSet::new();
        // Leads with a delivery in flight, and their later changes waiting for it.
        let mut busy: HashMap<u64, VecDeque<Arc<Event>>> = HashMap::new();
        let mut held = 0usize;
        // Once the queue is closed (shutdown), what is in flight still finishes.
        let mut open = true;
        while open || held > 0 {
            tokio::select! {
                event = self.queue.recv(), if open && held < limit => {
                    let Some(event) = event else {
                        open = false;
                        continue;
                    };
                    held += 1;
                    match busy.entry(event.key) {
                        Entry::Occupied(mut waiting) => waiting.get_mut().push_back(event),
                        Entry::Vacant(slot) => {
                            slot.insert(VecDeque::new());
                            self.start(&mut in_flight, event);
                        }
                    }
                }
                Some(done) = in_flight.join_next() => {
                    let Ok(key) = done else { return };
                    held -= 1;
                    match busy.get_mut(&key).and_then(VecDeque::pop_front) {
                        Some(next) => self.start(&mut in_flight, next),
                        None => {
                            busy.remove(&key);
                        }
                    }
                    if held == 0 && self.queue.is_empty() && self.checkpoint.is_lagging(self.index) {
                        self.caught_up.notify_one();
                    }
                }
            }
        }
    }

    fn start(&self, in_flight: &mut JoinSet<u64>, event: Arc<Event>) {
        let delivery = Delivery {
            index: self.index,
            hook: self.hook.clone(),
            client: self.client.clone(),
            checkpoint: self.checkpoint.clone(),
            dead_letters: self.dead_letters.clone(),
        };
        in_flight.spawn(async move {
            delivery.deliver(&event).await;
            event.key
        });
    }
}

/// What one delivery needs, owned so it can run as its own task.
struct Delivery {
    index: usize,
    hook: Arc<Webhook>,
    client: reqwest::Client,
    checkpoint: Arc<Checkpoint>,
    dead_letters: Arc<DeadLetterStore>,
}

impl Delivery {
    /// Tries until delivered or given up (then dead-lettered), and only then
    /// reports the change handled. A session ending aborts this task; the
    /// change is then streamed and delivered again, with the same id.
    async fn deliver(&self, event: &Event) {
        let hook = &self.hook;
        let pending = hook.gate.start();
        let first_attempt = SystemTime::now();
        // Attempts on this change's schedule; those the circuit answered for
        // it (while another change probed) are counted but not sent.
        let mut attempt: u32 = 0;
        let outcome = loop {
            attempt = attempt.saturating_add(1);
            let (failure, sent) = match hook.gate.admit(&pending).await {
                Admission::Send(sending) => {
                    let result =
                        request::attempt(hook, &self.client, &event.id, &event.payload).await;
                    sending.record(result.as_ref().map(|_| ()));
                    match result {
                        Ok(()) => {
                            hook.metrics
                                .lag
                                .record(crate::change::commit_age(event.commit_time));
                            break &hook.metrics.delivered;
                        }
                        Err(failure) => (failure, true),
                    }
                }
                Admission::Skip(failure) => {
                    hook.metrics.skipped.increment(1);
                    (failure, false)
                }
            };
            let next = if sent {
                retry::next(&hook.policy, &failure, attempt, fastrand::f64())
            } else {
                retry::next_skipped(&hook.policy, &failure, attempt, fastrand::f64())
            };
            match next {
                Next::RetryAfter(wait) => {
                    if sent {
                        tracing::warn!(
                            webhook = %hook.name, url = %hook.shown_url, webhook_id = ?event.id, attempt,
                            failure = %failure, retry_in = ?wait, "delivery failed"
                        );
                    }
                    tokio::time::sleep(wait).await;
                }
                Next::GiveUp => {
                    // No longer the oldest: while the letter is stored (which
                    // waits out a database outage), another change may probe.
                    drop(pending);
                    tracing::error!(
                        webhook = %hook.name, url = %hook.shown_url, webhook_id = ?event.id, attempt,
                        failure = %failure, "delivery failed for good; writing a dead letter"
                    );
                    let letter = DeadLetter {
                        webhook: hook.name.clone(),
                        webhook_id: event.id.to_str().unwrap_or_default().to_owned(),
                        payload: event.payload.clone(),
                        attempts: attempt,
                        last_status: failure.status(),
                        last_error: failure.to_string(),
                        first_attempt,
                        last_attempt: SystemTime::now(),
                    };
                    self.dead_letters.store(&letter).await;
                    break &hook.metrics.dead_lettered;
                }
            }
        };
        outcome.increment(1);
        self.checkpoint.handled(self.index, event.tx);
    }
}
