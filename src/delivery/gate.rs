//! Who may send to one webhook, and when: its circuit breaker and its
//! adaptive concurrency, under one lock, shared by the webhook's deliveries.
//!
//! - **Circuit.** After [`CIRCUIT_AFTER`] failed attempts in a row the
//!   circuit opens. While it is open only the oldest pending change sends, as
//!   a probe, on its own backoff schedule; the other changes' attempts fall
//!   due as before but are counted as failed without a request (the probe
//!   speaks for them), so they give up when they would have. A dead endpoint
//!   sees one request at a time instead of `max_in_flight` retries. A success
//!   closes the circuit.
//! - **Concurrency (AIMD).** A 429 or 503 says the endpoint is overloaded:
//!   the attempts allowed in flight halve (down to 1), and its `Retry-After`
//!   pauses the whole webhook, not only that change. Each run of `limit`
//!   successes adds one again, up to `max_in_flight`. A circuit that closes
//!   starts again from 1.
//!
//! The rules are plain methods on [`Rules`], so they are tested without a
//! clock or a network; [`Gate`] adds the waiting.

use std::collections::BTreeSet;
use std::sync::{Mutex, MutexGuard, PoisonError};
#[cfg(test)]
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::retry::Failure;

/// Failed attempts in a row that open a webhook's circuit.
pub(crate) const CIRCUIT_AFTER: u32 = 5;

/// A webhook's state, as `leadhook_webhook_state` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// Its last attempt succeeded (or none was made yet).
    Healthy,
    /// Its last attempts failed, fewer than [`CIRCUIT_AFTER`] in a row.
    Failing,
    /// Its circuit is open: one probe at a time.
    Open,
}

impl State {
    pub(crate) const ALL: [State; 3] = [State::Healthy, State::Failing, State::Open];

    pub(crate) fn label(self) -> &'static str {
        match self {
            State::Healthy => "healthy",
            State::Failing => "failing",
            State::Open => "open",
        }
    }
}

/// What a change that is due for an attempt may do.
pub(crate) enum Admission<'a> {
    /// Send the request now, and report how it went through the permit.
    Send(Sending<'a>),
    /// The circuit is open and another change probes: count this attempt
    /// as failed like the last real one, without sending.
    Skip(Failure),
}

/// What [`Rules::decide`] says.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Decision {
    Send,
    Skip(Failure),
    /// Ask again when something changes, or at the instant given.
    Wait(Option<Instant>),
}

/// The state behind a [`Gate`].
#[derive(Debug)]
struct Rules {
    max_in_flight: usize,
    /// Attempts allowed in flight now: `max_in_flight`, less after overload.
    limit: usize,
    in_flight: usize,
    /// Successes since `limit` last changed.
    run: usize,
    failures_in_a_row: u32,
    open: bool,
    /// Changes started and not yet done, by start order: the first is the oldest.
    pending: BTreeSet<u64>,
    /// Set by a `Retry-After`: nothing is sent before it.
    paused_until: Option<Instant>,
    /// The last real failure, which skipped attempts report.
    last_failure: Option<Failure>,
}

impl Rules {
    fn new(max_in_flight: usize) -> Rules {
        Rules {
            max_in_flight,
            limit: max_in_flight,
            in_flight: 0,
            run: 0,
            failures_in_a_row: 0,
            open: false,
            pending: BTreeSet::new(),
            paused_until: None,
            last_failure: None,
        }
    }

    fn state(&self) -> State {
        match (self.open, self.failures_in_a_row) {
            (true, _) => State::Open,
            (false, 0) => State::Healthy,
            (false, _) => State::Failing,
        }
    }

    fn decide(&self, change: u64, now: Instant) -> Decision {
        if let Some(until) = self.paused_until.filter(|until| now < *until) {
            return Decision::Wait(Some(until));
        }
        if self.open {
            let oldest = self.pending.first() == Some(&change);
            return match (oldest, &self.last_failure) {
                (true, _) if self.in_flight == 0 => Decision::Send,
                // Requests sent before the circuit opened are still out.
                (true, _) => Decision::Wait(None),
                (false, Some(failure)) => Decision::Skip(failure.clone()),
                (false, None) => Decision::Wait(None),
            };
        }
        if self.in_flight < self.limit {
            Decision::Send
        } else {
            Decision::Wait(None)
        }
    }

    /// A real attempt ended.
    fn record(&mut self, outcome: Result<(), &Failure>, now: Instant) {
        self.in_flight = self.in_flight.saturating_sub(1);
        match outcome {
            Ok(()) => {
                self.failures_in_a_row = 0;
                if self.open {
                    self.open = false;
                    self.limit = 1;
                    self.run = 0;
                }
                self.run += 1;
                if self.run >= self.limit {
                    self.limit = (self.limit + 1).min(self.max_in_flight);
                    self.run = 0;
                }
            }
            Err(failure) => {
                self.failures_in_a_row = self.failures_in_a_row.saturating_add(1);
                if failure.is_overload() {
                    self.limit = (self.limit / 2).max(1);
                    self.run = 0;
                    if let Some(wait) = failure.retry_after() {
                        self.paused_until = Some(now + wait);
                    }
                }
                self.last_failure = Some(failure.clone());
                if self.failures_in_a_row >= CIRCUIT_AFTER {
                    self.open = true;
                }
            }
        }
    }
}

/// One webhook's gate; see the module docs.
pub(crate) struct Gate {
    rules: Mutex<Rules>,
    /// Rung whenever the rules change, so waiting changes ask again.
    changed: Notify,
    /// Names the webhook in the log lines of state changes.
    name: String,
    metrics: GateMetrics,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("rules", &*self.rules())
            .finish_non_exhaustive()
    }
}

/// `leadhook_webhook_state{state}` (1 for the current state) and
/// `leadhook_concurrency`.
struct GateMetrics {
    states: [metrics::Gauge; 3],
    concurrency: metrics::Gauge,
}

impl Gate {
    pub(crate) fn new(name: &str, max_in_flight: usize) -> Gate {
        let state = |state: State| metrics::gauge!("leadhook_webhook_state", "webhook" => name.to_owned(), "state" => state.label());
        let gate = Gate {
            rules: Mutex::new(Rules::new(max_in_flight)),
            changed: Notify::new(),
            name: name.to_owned(),
            metrics: GateMetrics {
                states: State::ALL.map(state),
                concurrency: metrics::gauge!("leadhook_concurrency", "webhook" => name.to_owned()),
            },
        };
        gate.show(&gate.rules());
        gate
    }

    fn rules(&self) -> MutexGuard<'_, Rules> {
        self.rules.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A change started: it is the webhook's until the guard is dropped
    /// (delivered, given up, or its task aborted with its session).
    pub(crate) fn start(&self, change: u64) -> PendingChange<'_> {
        self.rules().pending.insert(change);
        PendingChange { gate: self, change }
    }

    /// Waits until `change` may send, or until its attempt counts as skipped.
    pub(crate) async fn admit(&self, change: &PendingChange<'_>) -> Admission<'_> {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let decision = {
                let mut rules = self.rules();
                let decision = rules.decide(change.change, Instant::now());
                if decision == Decision::Send {
                    rules.in_flight += 1;
                }
                decision
            };
            match decision {
                Decision::Send => {
                    return Admission::Send(Sending {
                        gate: self,
                        recorded: false,
                    });
                }
                Decision::Skip(failure) => return Admission::Skip(failure),
                Decision::Wait(None) => changed.await,
                Decision::Wait(Some(until)) => {
                    tokio::select! {
                        () = changed => {}
                        () = tokio::time::sleep_until(until) => {}
                    }
                }
            }
        }
    }

    /// A sent attempt ended; logs the webhook's state when it changes.
    fn record(&self, outcome: Option<Result<(), &Failure>>) {
        {
            let mut rules = self.rules();
            let Some(outcome) = outcome else {
                // Abandoned mid-request (the session ended): it only frees its place.
                rules.in_flight = rules.in_flight.saturating_sub(1);
                drop(rules);
                self.changed.notify_waiters();
                return;
            };
            let (before, limit) = (rules.state(), rules.limit);
            rules.record(outcome, Instant::now());
            let after = rules.state();
            if after != before {
                self.log_change(before, after, outcome.err());
            }
            if rules.limit < limit {
                tracing::warn!(webhook = %self.name, concurrency = rules.limit,
                    paused_for = ?rules.paused_until.map(|until| until.saturating_duration_since(Instant::now())),
                    "the endpoint says it is overloaded; sending less at once");
            }
            self.show(&rules);
        }
        self.changed.notify_waiters();
    }

    fn log_change(&self, before: State, after: State, failure: Option<&Failure>) {
        let name = &self.name;
        match (before, after, failure) {
            (_, State::Open, Some(failure)) => tracing::error!(webhook = %name, %failure,
                "{CIRCUIT_AFTER} attempts in a row failed: circuit open, one probe at a time"),
            (_, State::Failing, Some(failure)) => {
                tracing::warn!(webhook = %name, %failure, "webhook failing")
            }
            (State::Open, _, _) => tracing::info!(webhook = %name,
                "probe delivered: circuit closed, concurrency ramps back up"),
            _ => tracing::info!(webhook = %name, "webhook healthy again"),
        }
    }

    fn show(&self, rules: &Rules) {
        let now = rules.state();
        for (gauge, state) in self.metrics.states.iter().zip(State::ALL) {
            gauge.set(if state == now { 1.0 } else { 0.0 });
        }
        self.metrics.concurrency.set(rules.limit as f64);
    }
}

/// A change between its start and its end; dropping it lets the next
/// change be the oldest.
pub(crate) struct PendingChange<'a> {
    gate: &'a Gate,
    change: u64,
}

impl Drop for PendingChange<'_> {
    fn drop(&mut self) {
        self.gate.rules().pending.remove(&self.change);
        self.gate.changed.notify_waiters();
    }
}

/// One request in flight; [`Sending::record`] says how it went. Dropped
/// unrecorded (its task aborted), it only gives its place back.
pub(crate) struct Sending<'a> {
    gate: &'a Gate,
    recorded: bool,
}

impl Sending<'_> {
    pub(crate) fn record(mut self, outcome: Result<(), &Failure>) {
        self.recorded = true;
        self.gate.record(Some(outcome));
    }
}

impl Drop for Sending<'_> {
    fn drop(&mut self) {
        if !self.recorded {
            self.gate.record(None);
        }
    }
}

#[cfg(test)]
impl Rules {
    fn paused_for(&self, now: Instant) -> Option<Duration> {
        self.paused_until
            .map(|until| until.saturating_duration_since(now))
    }
}

#[cfg(test)]
mod tests;
