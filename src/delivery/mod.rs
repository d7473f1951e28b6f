//! Delivery: every event goes to every enabled webhook subscribed to
//! `save_lead`, with its method, headers and (optionally) signature, retried
//! with backoff for `retry_for` until delivered or dead-lettered.
//!
//! Each webhook has its own worker and bounded queue. A webhook that fails
//! for `spool_after` or holds the others up moves its backlog to the spool
//! (see [`spool`]), so the others and the slot go on. Without the spool
//! (`spool = false`) it is set lagging instead (see `checkpoint`), and its
//! backlog stays in the server's WAL; when it is the only one, a full queue
//! makes the lead stage wait and the source stop reading. Either way the
//! backlog is not held in memory.

pub(crate) mod activity;
pub(crate) mod clients;
mod deliver;
mod ending;
mod gate;
pub(crate) mod guard;
mod lanes;
pub(crate) mod pause;
pub mod probe;
pub mod replay;
pub(crate) mod request;
pub(crate) mod retry;
mod signature;
pub(crate) mod spool;
pub(crate) mod transport;
mod worker;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::HeaderValue;
use tokio::sync::mpsc::error::{SendTimeoutError, TrySendError};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;

use crate::checkpoint::{Checkpoint, Targets, TxSeq};
use crate::config::{DeliveryConfig, SigningKey, WebhookConfig};
use crate::dead_letter::DeadLetterStore;
use clients::Clients;
use deliver::Delivery;
pub(crate) use ending::Ending;
use gate::Gate;
use pause::Pauses;
use spool::store::SpoolStore;
use spool::writer::SpoolSender;
use spool::{Reason, SpoolState};
use worker::Worker;

/// Events queued per webhook, beyond those in flight.
const QUEUE: usize = 256;
/// How long a full queue may hold the others up before its webhook is set lagging.
const LAG_GRACE: Duration = Duration::from_secs(2);

/// One change, ready to send: the payload is serialised once for all webhooks.
#[derive(Debug)]
pub(crate) struct Event {
    /// `webhook-id`: the same on every attempt and redelivery of this change.
    pub(crate) id: HeaderValue,
    pub(crate) payload: Bytes,
    /// The payload's bytes in the memory budget, given back when the last
    /// webhook is done with the event.
    #[expect(dead_code, reason = "held for its Drop, which gives the bytes back")]
    pub(crate) memory: crate::memory::Reservation,
    /// The lead (a hash of its primary key): its changes go out one at a time.
    pub(crate) key: u64,
    pub(crate) tx: TxSeq,
    /// Where the change is in the stream, in order: (commit LSN, index) or
    /// (outbox sequence, 0). Kept with a spooled row (see `spool`).
    pub(crate) position: (i64, i32),
    pub(crate) targets: Targets,
    /// When the transaction committed (µs since 2000-01-01), for the lag metric.
    pub(crate) commit_time: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// A webhook as delivery needs it.
#[derive(Debug)]
pub(crate) struct Webhook {
    pub(crate) name: String,
    url: reqwest::Url,
    /// Scheme, host, port and path only: what logs may show of the URL.
    pub(crate) shown_url: String,
    method: reqwest::Method,
    pub(crate) policy: DeliveryConfig,
    signing_key: Option<SigningKey>,
    pub(crate) metrics: WebhookMetrics,
    /// Its circuit breaker and adaptive concurrency; kept across sessions.
    pub(crate) gate: Gate,
    /// Whether its backlog is in the spool; kept across sessions.
    pub(crate) spool: SpoolState,
    /// The config it was built from: a reload keeps this webhook (and so
    /// its gate and spool state) only while its config stays equal.
    pub(crate) config: WebhookConfig,
    /// Which webhooks are paused (by name), shared by all.
    pauses: Pauses,
    /// Its last success and failure, for the status table.
    pub(crate) activity: activity::Activity,
    /// How its requests reach its endpoint.
    pub(crate) transport: transport::Transport,
}

/// This webhook's metric handles, registered once: each attempt then only
/// increments, instead of building labels and looking them up.
#[derive(Clone)]
pub(crate) struct WebhookMetrics {
    pub(crate) duration: metrics::Histogram,
    pub(crate) lag: metrics::Histogram,
    success: metrics::Counter,
    http_error: metrics::Counter,
    timeout: metrics::Counter,
    connect_error: metrics::Counter,
    pub(crate) delivered: metrics::Counter,
    pub(crate) dead_lettered: metrics::Counter,
    /// Attempts the open circuit answered without a request.
    pub(crate) skipped: metrics::Counter,
    /// Changes its filter kept from it.
    pub(crate) filtered: metrics::Counter,
}

impl WebhookMetrics {
    fn new(name: &str) -> Self {
        let attempts = |result: &'static str| metrics::counter!("leadhook_delivery_attempts_total", "webhook" => name.to_owned(), "result" => result);
        let deliveries = |outcome: &'static str| metrics::counter!("leadhook_deliveries_total", "webhook" => name.to_owned(), "outcome" => outcome);
        WebhookMetrics {
            duration: metrics::histogram!("leadhook_delivery_duration_seconds", "webhook" => name.to_owned()),
            lag: metrics::histogram!("leadhook_event_lag_seconds", "webhook" => name.to_owned()),
            success: attempts("success"),
            http_error: attempts("http_error"),
            timeout: attempts("timeout"),
            connect_error: attempts("connect_error"),
            delivered: deliveries("delivered"),
            dead_lettered: deliveries("dead_lettered"),
            skipped: metrics::counter!("leadhook_circuit_skipped_attempts_total", "webhook" => name.to_owned()),
            filtered: metrics::counter!("leadhook_filtered_total", "webhook" => name.to_owned()),
        }
    }

    /// The attempts counter for a `result` label (see `retry::Failure::result_label`).
    pub(crate) fn attempts(&self, result: &str) -> &metrics::Counter {
        match result {
            "success" => &self.success,
            "http_error" => &self.http_error,
            "timeout" => &self.timeout,
            _ => &self.connect_error,
        }
    }
}

impl std::fmt::Debug for WebhookMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookMetrics")
    }
}

impl Webhook {
    /// Everything in `hook` was parsed when the config was loaded: this
    /// cannot fail.
    pub(crate) fn new(
        hook: &WebhookConfig,
        pauses: &Pauses,
        transport: transport::Transport,
    ) -> Webhook {
        let url = hook.url.expose().clone();
        let shown_url = hook.shown_url();
        Webhook {
            name: hook.name.clone(),
            url,
            shown_url,
            method: hook.method.clone(),
            policy: hook.policy.clone(),
            signing_key: hook.signing_key.clone(),
            metrics: WebhookMetrics::new(&hook.name),
            gate: Gate::new(
                &hook.name,
                hook.policy.max_in_flight,
                hook.policy.max_backoff,
            ),
            spool: SpoolState::new(&hook.name),
            config: hook.clone(),
            pauses: pauses.clone(),
            activity: Default::default(),
            transport,
        }
    }

    /// Paused by `leadhook webhooks pause`: its changes wait in the spool.
    pub(crate) fn is_paused(&self) -> bool {
        self.pauses.contains(&self.name)
    }

    /// Starts spooling (logged once), unless it already does.
    fn start_spooling(&self, reason: Reason) {
        if self.spool.start() {
            self.gate.show_spooling(|| self.spool.is_spooling());
            tracing::warn!(webhook = %self.name, %reason,
                "spooling: this webhook's changes wait in the spool until its endpoint catches up; the other webhooks and the slot go on");
        }
    }
}

/// The webhooks that receive `save_lead`, and the shared HTTP clients.
#[derive(Debug, Clone)]
pub(crate) struct Webhooks {
    hooks: Arc<[Arc<Webhook>]>,
    clients: Clients,
    pauses: Pauses,
}

impl Webhooks {
    /// No webhooks yet; [`Self::rebuilt`] gives them.
    pub(crate) fn new(pauses: Pauses) -> Webhooks {
        Webhooks {
            hooks: Arc::new([]),
            clients: Clients::default(),
            pauses,
        }
    }

    /// The webhooks of `configs` that receive `save_lead`, in that order.
    /// One whose config is unchanged is kept as it is (its circuit breaker,
    /// concurrency and spool state go on); the others are built anew.
    pub(crate) fn rebuilt(&self, configs: &[WebhookConfig]) -> Result<Webhooks, DeliveryError> {
        let mut hooks = Vec::new();
        for config in configs.iter().filter(|hook| hook.receives_save_lead()) {
            let kept = self.hooks.iter().find(|h| h.config == *config);
            hooks.push(match kept {
                Some(hook) => hook.clone(),
                None => Arc::new(Webhook::new(
                    config,
                    &self.pauses,
                    self.clients.transport(config)?,
                )),
            });
        }
        Ok(Webhooks {
            hooks: hooks.into(),
            clients: self.clients.clone(),
            pauses: self.pauses.clone(),
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.hooks.len()
    }

    /// Who each webhook is, for carrying positions across a reload: its
    /// origin and name (a file webhook and a table row of the same name
    /// are different webhooks).
    pub(crate) fn identities(&self) -> Vec<String> {
        self.hooks
            .iter()
            .map(|h| format!("{}:{}", h.config.origin, h.name))
            .collect()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Arc<Webhook>> {
        self.hooks.iter()
    }

    pub(crate) fn describe(&self) -> Vec<String> {
        self.hooks
            .iter()
            .map(|h| format!("{:?}: {} {}", h.name, h.method, h.shown_url))
            .collect()
    }

    /// Marks the webhooks the spool has rows for (by name) as spooling, so
    /// their later changes queue behind those rows. Names of webhooks not
    /// configured are returned: their rows stay in the table.
    pub(crate) fn resume_spooling(
        &self,
        depths: &std::collections::HashMap<String, u64>,
    ) -> Vec<String> {
        for hook in self.hooks.iter() {
            let rows = depths.get(&hook.name).copied().unwrap_or(0);
            hook.spool.set_rows(rows);
            if rows > 0 {
                hook.start_spooling(Reason::Rows);
            }
        }
        depths
            .keys()
            .filter(|name| !self.hooks.iter().any(|h| &h.name == *name))
            .cloned()
            .collect()
    }

    /// Starts one worker per webhook; returns what feeds their queues.
    pub(crate) fn spawn(
        &self,
        tasks: &mut JoinSet<()>,
        session: &DeliverySession,
        caught_up: &Arc<Notify>,
    ) -> Dispatcher {
        let checkpoint = &session.checkpoint;
        let queues = self
            .hooks
            .iter()
            .enumerate()
            .map(|(index, hook)| {
                let (tx, queue) = mpsc::channel(QUEUE);
                let worker = Worker {
                    index,
                    delivery: Arc::new(Delivery {
                        hook: hook.clone(),
                        dead_letters: session.dead_letters.clone(),
                        ending: session.ending.clone(),
                    }),
                    queue,
                    checkpoint: checkpoint.clone(),
                    caught_up: caught_up.clone(),
                    spool: session.spool.clone(),
                    spool_store: session.spool_store.clone(),
                    memory: session.memory.clone(),
                };
                tasks.spawn(worker.run());
                tx
            })
            .collect::<Vec<_>>();
        Dispatcher {
            holding_up_since: vec![None; queues.len()],
            queues,
            filtered: self.hooks.iter().any(|h| !h.config.filter.is_empty()),
            hooks: self.hooks.clone(),
            checkpoint: checkpoint.clone(),
        }
    }
}

/// What a session's workers share.
pub(crate) struct DeliverySession {
    pub(crate) checkpoint: Arc<Checkpoint>,
    pub(crate) dead_letters: Arc<DeadLetterStore>,
    /// The session's spool writer.
    pub(crate) spool: SpoolSender,
    /// Where the drainers read the spool back.
    pub(crate) spool_store: Arc<SpoolStore>,
    /// What the drainers' rows are held under.
    pub(crate) memory: crate::memory::MemoryBudget,
    /// How deliveries end when the session winds down for a reload.
    pub(crate) ending: tokio::sync::watch::Receiver<Ending>,
}

/// The worker of a webhook is gone: the session is ending.
#[derive(Debug)]
pub(crate) struct WorkerGone;

/// Hands each event to the queues of the webhooks it targets, in order.
pub(crate) struct Dispatcher {
    queues: Vec<mpsc::Sender<Arc<Event>>>,
    hooks: Arc<[Arc<Webhook>]>,
    checkpoint: Arc<Checkpoint>,
    /// Per webhook: since when its full queue has been holding the others
    /// up (they had room); cleared when it takes an event at once.
    holding_up_since: Vec<Option<Instant>>,
    /// Whether some webhook has a filter (else `dispatch` reads no column).
    filtered: bool,
}

impl Dispatcher {
    /// Queues the event for each webhook it targets, in order. A webhook
    /// that holds the others up for `LAG_GRACE` starts spooling (or, with
    /// `spool = false`, is set lagging); when all are equally slow,
    /// everyone waits (backpressure). A webhook whose filter the lead does
    /// not pass (its columns read by `column`, as text) has it handled at once.
    pub(crate) async fn dispatch<'a>(
        &mut self,
        event: Event,
        column: impl Fn(&str) -> Option<&'a str>,
    ) -> Result<(), WorkerGone> {
        let event = Arc::new(event);
        for index in 0..self.queues.len() {
            if !event.targets.contains(index) || self.checkpoint.is_lagging(index) {
                continue;
            }
            if self.filtered && !self.hooks[index].config.filter.matches(&column) {
                self.hooks[index].metrics.filtered.increment(1);
                self.checkpoint.handled(index, event.tx);
                continue;
            }
            let mut pending = match self.queues[index].try_send(event.clone()) {
                Ok(()) => {
                    self.holding_up_since[index] = None;
                    continue;
                }
                Err(TrySendError::Closed(_)) => return Err(WorkerGone),
                Err(TrySendError::Full(back)) => back,
            };
            let hook = &self.hooks[index];
            if hook.policy.spool
                && hook.gate.failing_for().is_some()
                && self.others_have_room(index)
            {
                // Failing, and its queue is full: waiting for it would only
                // hold the others up. (Alone, it waits for `spool_after`.)
                hook.start_spooling(Reason::FullWhileFailing);
            }
            loop {
                let others_have_room = self.others_have_room(index);
                let since = match (others_have_room, self.holding_up_since[index]) {
                    (true, Some(since)) => since,
                    (true, None) => *self.holding_up_since[index].insert(Instant::now()),
                    (false, _) => {
                        self.holding_up_since[index] = None;
                        Instant::now()
                    }
                };
                let wait = LAG_GRACE
                    .saturating_sub(since.elapsed())
                    .max(Duration::from_millis(10));
                match self.queues[index].send_timeout(pending, wait).await {
                    Ok(()) => break,
                    Err(SendTimeoutError::Closed(_)) => return Err(WorkerGone),
                    Err(SendTimeoutError::Timeout(back)) => {
                        let held_long =
                            since.elapsed() >= LAG_GRACE && self.others_have_room(index);
                        let hook = &self.hooks[index];
                        if held_long && hook.policy.spool {
                            // Its worker now hands its queue to the spool.
                            hook.start_spooling(Reason::HoldingUp);
                            self.holding_up_since[index] = None;
                        } else if held_long && self.checkpoint.set_lagging(index, event.tx) {
                            tracing::warn!(
                                webhook = %self.hooks[index].name,
                                "webhook is falling behind; the others go on, and its backlog is streamed again from its position once it catches up"
                            );
                            self.holding_up_since[index] = None;
                            break;
                        }
                        pending = back;
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether some webhook filters on columns (which must then be read).
    pub(crate) fn reads_columns(&self) -> bool {
        self.filtered
    }

    /// A change `targets` need not get after all (a backfilled row a live
    /// change superseded): handled for each, as if delivered.
    pub(crate) fn skip(&self, targets: &Targets, tx: TxSeq) {
        for index in (0..self.queues.len()).filter(|i| targets.contains(*i)) {
            self.checkpoint.handled(index, tx);
        }
    }

    /// Whether another webhook still keeping up has room in its queue, i.e.
    /// is being held up rather than slow itself.
    fn others_have_room(&self, index: usize) -> bool {
        self.queues.iter().enumerate().any(|(i, queue)| {
            i != index && !self.checkpoint.is_lagging(i) && queue.capacity() >= QUEUE / 2
        })
    }
}
