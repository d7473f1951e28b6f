//! One change to one webhook: attempts on its retry schedule, as the
//! webhook's [`Gate`](super::gate::Gate) admits them, until it is delivered,
//! given up on (then dead-lettered), or handed to the spool.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use reqwest::header::HeaderValue;

use super::ending::{Ending, Verdict, winding_down};
use super::gate::Admission;
use super::retry::{self, Next, Tried};
use super::spool::SpoolState;
use super::{Webhook, request};
use crate::dead_letter::{DeadLetter, DeadLetterStore};

/// What one delivery needs, shared by the tasks of a webhook's deliveries.
pub(super) struct Delivery {
    pub(super) hook: Arc<Webhook>,
    pub(super) dead_letters: Arc<DeadLetterStore>,
    /// Set when the session winds down for a reload.
    pub(super) ending: tokio::sync::watch::Receiver<Ending>,
}

/// The change to send.
pub(super) struct Outgoing<'a> {
    /// `webhook-id`: the same on every attempt and redelivery.
    pub(super) id: &'a HeaderValue,
    pub(super) payload: &'a Bytes,
    /// µs since 2000-01-01, for the lag metric.
    pub(super) commit_time: i64,
    /// Its first attempt and the attempts made, if it was tried before
    /// (live, before it was spooled).
    pub(super) tried: Option<(SystemTime, u32)>,
}

/// How a delivery ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    Delivered,
    DeadLettered,
    /// The webhook started spooling while this change waited for its next
    /// attempt: its first attempt (if any) and the attempts so far.
    Spool(Option<(SystemTime, u32)>),
    /// The session winds down for a reload: not handled, sent again by the
    /// next session.
    Abandoned,
}

impl Delivery {
    /// Tries until delivered or given up (then dead-lettered). With
    /// `may_spool` (a live delivery of a webhook that may spool), a wait
    /// between attempts ends when the webhook starts spooling, and the
    /// change goes there. A session ending aborts this task; the change is
    /// then delivered again later, with the same id.
    pub(super) async fn deliver(&self, change: Outgoing<'_>, may_spool: bool) -> Outcome {
        let hook = &self.hook;
        let spool = may_spool.then_some(&hook.spool);
        let pending = hook.gate.start();
        let (mut first_attempt, mut attempt) = match change.tried {
            Some((at, attempts)) => (Some(at), attempts),
            None => (None, 0),
        };
        // Whether an attempt of this delivery failed: a session winding
        // down for a reload still sends every change once (cutting off
        // untried ones would make the webhook see later changes it had
        // already acknowledged again), but does not wait to retry.
        let mut failed = false;
        let outcome = loop {
            let verdict = self.ending.borrow().verdict(&hook.name);
            match verdict {
                Verdict::Continue => {}
                Verdict::Abandon if failed => break Outcome::Abandoned,
                Verdict::Abandon => {}
                Verdict::Retire(reason) => {
                    drop(pending);
                    let first = first_attempt.unwrap_or_else(SystemTime::now);
                    let failure = retry::Failure::Other(reason);
                    self.dead_letter(&change, first, attempt, &failure).await;
                    break Outcome::DeadLettered;
                }
            }
            if spool.is_none() && hook.is_paused() {
                // A drainer's row: it stays in the spool until the resume.
                break Outcome::Abandoned;
            }
            let admission = tokio::select! {
                // Admission first: when it is granted at once, as it mostly
                // is, the spooling watch is never even subscribed to.
                biased;
                admission = hook.gate.admit(&pending) => admission,
                () = spooling_started(spool) => {
                    break Outcome::Spool(first_attempt.map(|at| (at, attempt)));
                }
                () = winding_down(&self.ending), if failed => continue,
            };
            attempt = attempt.saturating_add(1);
            // When it was first tried, and how it went since: read from the
            // clock only once an attempt failed (a success needs neither).
            let mut tried_since = |first: SystemTime| {
                let first = *first_attempt.get_or_insert(first);
                let since_first = first.elapsed().unwrap_or_default();
                let tried = Tried {
                    attempts: attempt,
                    since_first,
                };
                (first, tried)
            };
            let (first, next) = match admission {
                Admission::Send(sending) => {
                    let (result, took) = request::attempt(hook, change.id, change.payload).await;
                    sending.record(result.as_ref().map(|_| ()));
                    let now = SystemTime::now();
                    let failure = match result {
                        Ok(()) => {
                            let age = crate::change::commit_age(change.commit_time, now);
                            hook.metrics.lag.record(age);
                            hook.activity.delivered(now, age);
                            break Outcome::Delivered;
                        }
                        Err(failure) => {
                            hook.activity.failed(&failure);
                            failure
                        }
                    };
                    failed = true;
                    let (first, tried) = tried_since(now.checked_sub(took).unwrap_or(now));
                    let next = retry::next(&hook.policy, &failure, tried, fastrand::f64());
                    if let Next::RetryAfter(wait) = next {
                        tracing::warn!(
                            webhook = %hook.name, url = %hook.shown_url, webhook_id = ?change.id, attempt,
                            failure = %failure, retry_in = ?wait, "delivery failed"
                        );
                    }
                    (first, (next, failure))
                }
                Admission::Skip(failure) => {
                    failed = true;
                    hook.metrics.skipped.increment(1);
                    let (first, tried) = tried_since(SystemTime::now());
                    let next = retry::next_skipped(&hook.policy, &failure, tried, fastrand::f64());
                    (first, (next, failure))
                }
            };
            match next {
                (Next::RetryAfter(wait), _) => tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = spooling_started(spool) => {
                        break Outcome::Spool(Some((first, attempt)));
                    }
                    // The verdict at the top of the loop says what now.
                    () = winding_down(&self.ending) => {}
                },
                (Next::GiveUp, failure) => {
                    // No longer the oldest: while the letter is stored (which
                    // waits out a database outage), another change may probe.
                    drop(pending);
                    self.dead_letter(&change, first, attempt, &failure).await;
                    break Outcome::DeadLettered;
                }
            }
        };
        match outcome {
            Outcome::Delivered => hook.metrics.delivered.increment(1),
            Outcome::DeadLettered => hook.metrics.dead_lettered.increment(1),
            Outcome::Spool(_) | Outcome::Abandoned => {}
        }
        outcome
    }

    async fn dead_letter(
        &self,
        change: &Outgoing<'_>,
        first_attempt: SystemTime,
        attempts: u32,
        failure: &retry::Failure,
    ) {
        let hook = &self.hook;
        tracing::error!(
            webhook = %hook.name, url = %hook.shown_url, webhook_id = ?change.id, attempt = attempts,
            failure = %failure, "delivery failed for good; writing a dead letter"
        );
        let letter = DeadLetter {
            webhook: hook.name.clone(),
            webhook_id: change.id.to_str().unwrap_or_default().to_owned(),
            payload: change.payload.clone(),
            attempts,
            last_status: failure.status(),
            last_error: failure.to_string(),
            first_attempt,
            last_attempt: SystemTime::now(),
        };
        // Boxed: storing may connect to the database, kilobytes of state
        // that every delivery's future would otherwise carry (and be copied
        // with when it is spawned).
        Box::pin(self.dead_letters.store(&letter)).await;
    }
}

/// Resolves once the webhook is spooling; never without its state. It
/// subscribes when first polled, so only waits that happen pay for it.
async fn spooling_started(spool: Option<&SpoolState>) {
    match spool {
        Some(spool) => {
            if spool.watch().wait_for(|on| *on).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}
