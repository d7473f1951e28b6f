//! Who may send to one webhook, and when: its circuit breaker and its
//! adaptive concurrency, under one lock, shared by the webhook's deliveries.
//!
//! - **Circuit.** When [`CIRCUIT_AFTER`] different changes in a row found
//!   the endpoint down (no connection, no answer, or a 5xx other than 503),
//!   the circuit opens. While it is open only the oldest pending change
//!   sends, as a probe, on its own backoff schedule; the other changes'
//!   attempts fall due as before but are counted as failed without a
//!   request (the probe speaks for them), so they give up when they would
//!   have. A dead endpoint sees one request at a time instead of
//!   `max_in_flight` retries. A success closes the circuit. One change that
//!   keeps failing (a payload the endpoint rejects) never opens it, nor do
//!   4xx answers or overload.
//! - **Concurrency (AIMD).** A 429 or 503 says the endpoint is overloaded:
//!   the attempts allowed in flight halve (down to 1, once per round of
//!   requests), and its `Retry-After` (capped at `max_backoff`) pauses the
//!   whole webhook, not only that change. Each run of `limit` successes
//!   adds one again, up to `max_in_flight`. A circuit that closes starts
//!   again from 1.
//!
//! The rules are plain methods on [`Rules`], so they are tested without a
//! clock or a network; [`Gate`] adds the waiting.

use std::collections::BTreeSet;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::retry::Failure;

/// Different changes in a row that must find the endpoint down to open
/// its circuit.
pub(crate) const CIRCUIT_AFTER: usize = 5;

/// A webhook's state, as `leadhook_webhook_state` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// Its last attempt succeeded (or none was made yet).
    Healthy,
    /// Its last attempts failed, not (yet) enough to open the circuit.
    Failing,
    /// Its circuit is open: one probe at a time.
    Open,
    /// Its backlog is in the spool (shown over the others; see `spool`).
    Spooling,
}

impl State {
    pub(crate) const ALL: [State; 4] =
        [State::Healthy, State::Failing, State::Open, State::Spooling];

    pub(crate) fn label(self) -> &'static str {
        match self {
            State::Healthy => "healthy",
            State::Failing => "failing",
            State::Open => "open",
            State::Spooling => "spooling",
        }
    }
}

/// What a change that is due for an attempt may do.
pub(crate) enum Admission<'a> {
    /// Send the request now, and report how it went through the permit.
    Send(Sending<'a>),
    /// The circuit is open and another change probes: count this attempt
    /// as failed like the probe's last one, without sending.
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

/// What one recorded attempt changed, for the log and the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Change {
    before: State,
    after: State,
    limit_before: usize,
    limit_after: usize,
}

/// The state behind a [`Gate`].
#[derive(Debug)]
struct Rules {
    max_in_flight: usize,
    /// Attempts allowed in flight now: `max_in_flight`, less after overload.
    limit: usize,
    /// Requests sent and not yet answered.
    in_flight: usize,
    /// Successes since `limit` last changed.
    run: usize,
    /// Bumped each time `limit` is halved: an overload answer to a request
    /// admitted before that belongs to the same round and halves no further.
    round: u64,
    /// The changes that found the endpoint down since the last success.
    down: BTreeSet<u64>,
    /// The last attempt failed (any failure): shown as `failing`.
    failed_last: bool,
    /// Since when every attempt has failed: how long the webhook has been
    /// failing, which decides when it spools.
    failing_since: Option<Instant>,
    /// Its backlog is in the spool: shown as `spooling`.
    spooling: bool,
    open: bool,
    /// Changes started and not yet done, by start order: the first is the oldest.
    pending: BTreeSet<u64>,
    /// Hands out change ids, so they never repeat while the gate lives.
    next_change: u64,
    /// Set by a `Retry-After`: nothing is sent before it.
    paused_until: Option<Instant>,
    /// Caps a `Retry-After`, as for the change that got it.
    max_pause: Duration,
    /// The last "endpoint down" failure, which skipped attempts report.
    last_down: Option<Failure>,
    /// Tasks waiting in [`Gate::admit`]: notified only when there are any.
    waiting: usize,
}

impl Rules {
    fn new(max_in_flight: usize, max_pause: Duration) -> Rules {
        Rules {
            max_in_flight,
            limit: max_in_flight,
            in_flight: 0,
            run: 0,
            round: 0,
            down: BTreeSet::new(),
            failed_last: false,
            failing_since: None,
            spooling: false,
            open: false,
            pending: BTreeSet::new(),
            next_change: 0,
            paused_until: None,
            max_pause,
            last_down: None,
            waiting: 0,
        }
    }

    fn state(&self) -> State {
        match (self.open, self.failed_last) {
            (true, _) => State::Open,
            (false, false) => State::Healthy,
            (false, true) => State::Failing,
        }
    }

    /// What `leadhook_webhook_state` shows: spooling over the circuit's state.
    fn shown(&self) -> State {
        if self.spooling {
            State::Spooling
        } else {
            self.state()
        }
    }

    /// What may be in flight now: 1 while the circuit is open.
    fn effective_limit(&self) -> usize {
        if self.open { 1 } else { self.limit }
    }

    /// `now` is read only while a pause is on: the rest are counts.
    fn decide(&self, change: u64, now: impl FnOnce() -> Instant) -> Decision {
        if let Some(until) = self.paused_until.filter(|until| now() < *until) {
            return Decision::Wait(Some(until));
        }
        if self.open {
            let oldest = self.pending.first() == Some(&change);
            return match (oldest, &self.last_down) {
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

    /// A real attempt of `change`, admitted in `round`, ended; `now` is
    /// read only if it failed.
    fn record(
        &mut self,
        change: u64,
        round: u64,
        outcome: Result<(), &Failure>,
        now: impl FnOnce() -> Instant,
    ) -> Change {
        let (before, limit_before) = (self.state(), self.effective_limit());
        self.in_flight = self.in_flight.saturating_sub(1);
        match outcome {
            Ok(()) => self.succeeded(),
            Err(failure) => self.failed(change, round, failure, now()),
        }
        Change {
            before,
            after: self.state(),
            limit_before,
            limit_after: self.effective_limit(),
        }
    }

    fn succeeded(&mut self) {
        self.failed_last = false;
        self.failing_since = None;
        self.down.clear();
        if self.open {
            self.open = false;
            self.limit = 1;
            self.run = 0;
            return;
        }
        self.run += 1;
        if self.run >= self.limit {
            self.limit = (self.limit + 1).min(self.max_in_flight);
            self.run = 0;
        }
    }

    fn failed(&mut self, change: u64, round: u64, failure: &Failure, now: Instant) {
        self.failed_last = true;
        self.failing_since.get_or_insert(now);
        if failure.is_overload() {
            if round == self.round {
                self.limit = (self.limit / 2).max(1);
                self.run = 0;
                self.round += 1;
            }
            if let Some(wait) = failure.retry_after() {
                let until = now.checked_add(wait.min(self.max_pause));
                self.paused_until = self.paused_until.max(until);
            }
        }
        if failure.is_endpoint_down() {
            self.down.insert(change);
            self.last_down = Some(failure.clone());
            if self.down.len() >= CIRCUIT_AFTER {
                self.open = true;
            }
        }
    }
}

/// One webhook's gate; see the module docs.
pub(crate) struct Gate {
    rules: Mutex<Rules>,
    /// Rung whenever the rules change while changes wait, so they ask again.
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

/// `leadhook_webhook_state{state}` (1 for the current state),
/// `leadhook_concurrency` and `leadhook_in_flight`.
struct GateMetrics {
    states: [metrics::Gauge; 4],
    concurrency: metrics::Gauge,
    in_flight: metrics::Gauge,
}

impl Gate {
    /// A gate for webhook `name`; `max_pause` caps a `Retry-After`.
    pub(crate) fn new(name: &str, max_in_flight: usize, max_pause: Duration) -> Gate {
        let state = |state: State| metrics::gauge!("leadhook_webhook_state", "webhook" => name.to_owned(), "state" => state.label());
        let gate = Gate {
            rules: Mutex::new(Rules::new(max_in_flight, max_pause)),
            changed: Notify::new(),
            name: name.to_owned(),
            metrics: GateMetrics {
                states: State::ALL.map(state),
                concurrency: metrics::gauge!("leadhook_concurrency", "webhook" => name.to_owned()),
                in_flight: metrics::gauge!("leadhook_in_flight", "webhook" => name.to_owned()),
            },
        };
        let rules = gate.rules();
        gate.show_state(rules.shown());
        gate.metrics.concurrency.set(rules.effective_limit() as f64);
        drop(rules);
        gate
    }

    fn rules(&self) -> MutexGuard<'_, Rules> {
        self.rules.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes the changes waiting in [`Self::admit`], if there are any.
    fn wake(&self, rules: &Rules) {
        if rules.waiting > 0 {
            self.changed.notify_waiters();
        }
    }

    /// A change started: it is the webhook's until the guard is dropped
    /// (delivered, given up, or its task aborted with its session).
    pub(crate) fn start(&self) -> PendingChange<'_> {
        let mut rules = self.rules();
        rules.next_change += 1;
        let change = rules.next_change;
        rules.pending.insert(change);
        PendingChange { gate: self, change }
    }

    /// Waits until `change` may send, or until its attempt counts as skipped.
    pub(crate) async fn admit(&self, change: &PendingChange<'_>) -> Admission<'_> {
        // The common case decides at once, without registering to wait.
        if let Ok(admission) = self.try_admit(change.change) {
            return admission;
        }
        self.rules().waiting += 1;
        let _waiting = Waiting(self);
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            // Asked again now that a change of the rules cannot be missed.
            let until = match self.try_admit(change.change) {
                Ok(admission) => return admission,
                Err(Decision::Wait(until)) => until,
                Err(_) => None,
            };
            match until {
                Some(until) => {
                    tokio::select! {
                        () = changed => {}
                        () = tokio::time::sleep_until(until) => {}
                    }
                }
                None => changed.await,
            }
        }
    }

    /// Admits `change` if the rules let it; otherwise says how to wait.
    fn try_admit(&self, change: u64) -> Result<Admission<'_>, Decision> {
        let mut rules = self.rules();
        match rules.decide(change, Instant::now) {
            Decision::Send => {
                rules.in_flight += 1;
                self.metrics.in_flight.set(rules.in_flight as f64);
                Ok(Admission::Send(Sending {
                    gate: self,
                    change,
                    round: rules.round,
                    recorded: false,
                }))
            }
            Decision::Skip(failure) => Ok(Admission::Skip(failure)),
            wait @ Decision::Wait(_) => Err(wait),
        }
    }

    /// A sent attempt ended (`None`: abandoned mid-request with its session).
    fn record(&self, change: u64, round: u64, outcome: Option<Result<(), &Failure>>) {
        let (changed, paused_for) = {
            let mut rules = self.rules();
            let changed = match outcome {
                Some(outcome) => Some(rules.record(change, round, outcome, Instant::now)),
                None => {
                    rules.in_flight = rules.in_flight.saturating_sub(1);
                    None
                }
            };
            self.metrics.in_flight.set(rules.in_flight as f64);
            self.wake(&rules);
            let paused_for = rules
                .paused_until
                .map(|until| until.saturating_duration_since(Instant::now()));
            (changed, paused_for)
        };
        let Some(changed) = changed else { return };
        if changed.after != changed.before {
            self.show_state(self.rules().shown());
            self.log_state(changed, outcome.and_then(Result::err));
        }
        if changed.limit_after != changed.limit_before {
            self.metrics.concurrency.set(changed.limit_after as f64);
            if changed.limit_after < changed.limit_before && changed.after != State::Open {
                tracing::warn!(webhook = %self.name, concurrency = changed.limit_after, ?paused_for,
                    "the endpoint says it is overloaded; sending less at once");
            }
        }
    }

    /// The state shown now and the requests in flight, for the status table.
    pub(crate) fn snapshot(&self) -> (State, usize) {
        let rules = self.rules();
        (rules.shown(), rules.in_flight)
    }

    /// How long every attempt has failed, if the last one did.
    pub(crate) fn failing_for(&self) -> Option<Duration> {
        self.rules().failing_since.map(|since| since.elapsed())
    }

    /// Shows the webhook as spooling or not, as `spooling` says when it is
    /// asked under the gate's lock: of two racing callers (one starting,
    /// one stopping), the last to show shows the truth.
    pub(crate) fn show_spooling(&self, spooling: impl Fn() -> bool) {
        let mut rules = self.rules();
        rules.spooling = spooling();
        let shown = rules.shown();
        drop(rules);
        self.show_state(shown);
    }

    /// Logs opening and closing the circuit: once each, not per attempt
    /// (each failed request is logged as it happens anyway).
    fn log_state(&self, changed: Change, failure: Option<&Failure>) {
        let name = &self.name;
        match (changed.before, changed.after, failure) {
            (_, State::Open, Some(failure)) => tracing::error!(webhook = %name, %failure,
                "{CIRCUIT_AFTER} changes in a row found the endpoint down: circuit open, one probe at a time"),
            (State::Open, _, _) => tracing::info!(webhook = %name,
                "a request succeeded: circuit closed, concurrency ramps back up from 1"),
            _ => {}
        }
    }

    fn show_state(&self, now: State) {
        for (gauge, state) in self.metrics.states.iter().zip(State::ALL) {
            gauge.set(if state == now { 1.0 } else { 0.0 });
        }
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
        let mut rules = self.gate.rules();
        rules.pending.remove(&self.change);
        self.gate.wake(&rules);
    }
}

/// One request in flight; [`Sending::record`] says how it went. Dropped
/// unrecorded (its task aborted), it only gives its place back.
pub(crate) struct Sending<'a> {
    gate: &'a Gate,
    change: u64,
    /// The overload round it was admitted in (see [`Rules::round`]).
    round: u64,
    recorded: bool,
}

impl Sending<'_> {
    pub(crate) fn record(mut self, outcome: Result<(), &Failure>) {
        self.recorded = true;
        self.gate.record(self.change, self.round, Some(outcome));
    }
}

impl Drop for Sending<'_> {
    fn drop(&mut self) {
        if !self.recorded {
            self.gate.record(self.change, self.round, None);
        }
    }
}

/// Counts a task as waiting in [`Gate::admit`] while it lives.
struct Waiting<'a>(&'a Gate);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.rules().waiting -= 1;
    }
}

#[cfg(test)]
mod tests;
