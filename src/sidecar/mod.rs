//! The sidecar: wires source → lead mapping → delivery → checkpoint for one
//! replication session, and starts a new session with backoff whenever one
//! ends (lost connection, Postgres restart). A new session resumes from the
//! last confirmed position, so changes in flight are delivered again with
//! the same `webhook-id`: at-least-once, never lost.
//!
//! A stop request (SIGTERM/SIGINT) ends the session gracefully: the source
//! stops reading, deliveries in flight get `admin.shutdown_grace` to finish,
//! and the position of everything handled is confirmed before closing.
//!
//! `session` runs one session; this module is the loop around it: what is
//! fatal, what is standing by, and the backoff between attempts.

mod session;
mod stages;
mod status;

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::status::StatusBoard;
use crate::admin::{self, AdminError, Health};
use crate::checkpoint::Positions;
use crate::config::WebhookConfig;
use crate::config::{Config, SourceMode};
use crate::database::{Database, DatabaseError};
use crate::dead_letter::DeadLetterStore;
use crate::delivery::pause::Pauses;
use crate::delivery::spool::store::SpoolStore;
use crate::delivery::{DeliveryError, Ending, Webhooks};
use crate::lsn::Lsn;
use crate::memory::MemoryBudget;
use crate::registry::{self, Changes, Wanted};
use crate::setup::prerequisites::PrerequisiteError;
use crate::shutdown::Shutdown;
use session::{Session, SessionEnd};

const FIRST_RETRY: Duration = Duration::from_millis(500);
const MAX_RETRY: Duration = Duration::from_secs(30);
/// A standby polls the slot this often, so it takes over within seconds.
const STANDBY_RETRY: Duration = Duration::from_secs(1);

/// Carried by [`SidecarError::Refused`]; named here so callers can match on it.
pub use crate::source::replication::ReplicationError;

/// Why the sidecar stopped for good (everything else is retried).
#[derive(Debug, thiserror::Error)]
pub enum SidecarError {
    #[error(transparent)]
    Database(#[from] DatabaseError),
    #[error(transparent)]
    Delivery(#[from] DeliveryError),
    #[error(transparent)]
    Admin(#[from] AdminError),
    #[error("the database is not ready for leadhook:\n{0}")]
    Prerequisites(PrerequisiteError),
    #[error("the replication connection was refused: {0}")]
    Refused(ReplicationError),
}

/// Runs the sidecar until `stop` completes (then shuts down gracefully and
/// returns `Ok`) or a fatal error. Transient failures are logged and retried
/// with capped exponential backoff. `config_path` is read again on SIGHUP
/// (`None`: reloading is off); webhooks from `[registry]` and pauses are
/// followed while it runs. The admin endpoint's bound address is sent on
/// `admin_bound` (for the demo, which listens on any free port).
pub async fn run(
    config: Config,
    config_path: Option<PathBuf>,
    stop: impl Future<Output = ()> + Send + 'static,
    admin_bound: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
) -> Result<(), SidecarError> {
    let db = Database::from_url(config.database.url.expose())?;
    let health = Health::new();
    let board = Arc::new(StatusBoard::default());
    let admin = admin::serve(config.admin.listen, health.clone(), board.clone()).await?;
    tracing::info!(%admin, "admin endpoint listening (/ status page, /api/status, /metrics, /healthz, /readyz)");
    if let Some(bound) = admin_bound {
        let _ = bound.send(admin);
    }
    // After the recorder is installed: webhooks register their metric handles.
    let pauses = Pauses::default();
    let mut webhooks = Webhooks::new(pauses.clone());
    let registry = registry::start(config.clone(), config_path, db.clone());
    let follow_pauses = tokio::spawn(apply_pauses(registry.pauses.clone(), pauses));
    let mut wanted = registry.wanted.clone();
    let (trigger, mut shutdown) = Shutdown::new();
    let watcher = tokio::spawn(async move {
        stop.await;
        trigger.request();
    });
    // The table's webhooks and the pauses belong to the first session too:
    // without them it would confirm changes a table webhook never got, or
    // send to a paused one.
    health.not_ready("reading the webhooks and pauses from the database");
    tokio::select! {
        _ = wanted.wait_for(|w| w.looked) => {}
        () = shutdown.requested() => {
            watcher.abort();
            return Ok(());
        }
    }
    let dead_letters = Arc::new(DeadLetterStore::new(db.clone(), &config.database.schema));
    let mut applied: Option<Arc<Wanted>> = None;
    let mut to_retire = Vec::new();
    let mut memory = MemoryBudget::new(config.memory);
    let mut positions = Positions::at(Lsn::ZERO, 0);
    let (shown, active) = watch::channel(webhooks.clone());
    let status = tokio::spawn(
        status::Reporter {
            db: db.clone(),
            schema: config.database.schema.clone(),
            health: health.clone(),
            board,
            running: active,
            wanted: registry.wanted.clone(),
        }
        .run(),
    );
    let mut delay = FIRST_RETRY;
    // What the last session ended to apply: exactly that is applied (its
    // retirements were dead-lettered against it); anything newer makes the
    // next session restart again at once.
    let reloaded_to = Arc::new(std::sync::Mutex::new(None::<Arc<Wanted>>));
    let result = loop {
        let pending = reloaded_to.lock().ok().and_then(|mut to| to.take());
        let now = pending.unwrap_or_else(|| wanted.borrow_and_update().clone());
        if applied.as_ref().is_none_or(|was| now.differs_from(was)) {
            let before: Option<Vec<_>> = applied
                .as_ref()
                .map(|was| was.webhooks().cloned().collect());
            let next = match webhooks.rebuilt(&now.webhooks().cloned().collect::<Vec<_>>()) {
                Ok(next) => next,
                Err(e) => break Err(e.into()),
            };
            let (remapped, cut_over) = positions.remap(&webhooks.identities(), &next.identities());
            report_changes(before.as_deref(), &now, &next, cut_over, &mut to_retire);
            if applied
                .as_ref()
                .is_none_or(|was| was.config.memory != now.config.memory)
            {
                memory = MemoryBudget::new(now.config.memory);
            }
            (webhooks, positions) = (next, remapped);
            applied = Some(now.clone());
        }
        shown.send_replace(webhooks.clone());
        retire_spooled(&db, &now.config, &mut to_retire).await;
        if !to_retire.is_empty() {
            // A webhook of the same name must not drain them: wait until moved.
            health.not_ready("moving a retired webhook's spooled changes to the dead letters");
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = shutdown.requested() => break Ok(()),
            }
            delay = (delay * 2).min(MAX_RETRY);
            continue;
        }
        let (session_stop, ending, forwarder) =
            session_stop(&shutdown, &wanted, now.clone(), reloaded_to.clone());
        let ctx = Session {
            config: &now.config,
            db: &db,
            webhooks: &webhooks,
            dead_letters: dead_letters.clone(),
            health: &health,
            shutdown: session_stop,
            memory: memory.clone(),
            ending,
        };
        let started = tokio::time::Instant::now();
        let outcome = ctx.run(&mut positions).await;
        forwarder.abort();
        let reloading = !matches!(*ctx.ending.borrow(), Ending::Running);
        let error = match outcome {
            Ok(SessionEnd::Stopped) if reloading => {
                tracing::info!(resume_from = %positions.resume(), "applying the new webhooks: the session restarts with them");
                continue;
            }
            Ok(SessionEnd::Stopped) => {
                tracing::info!(confirmed = %positions.resume(), "stopped");
                break Ok(());
            }
            Ok(SessionEnd::CaughtUp) => {
                tracing::info!(resume_from = %positions.resume(), "a lagging webhook caught up; streaming its backlog again");
                continue;
            }
            Err(error) => match error.into_fatal() {
                Ok(fatal) => {
                    health.not_ready(fatal.to_string().lines().next().unwrap_or_default());
                    break Err(fatal);
                }
                Err(transient) => transient,
            },
        };
        if started.elapsed() > MAX_RETRY {
            delay = FIRST_RETRY;
        }
        let wait = if error.is_standby() {
            health.not_ready(match config.source.mode {
                SourceMode::Replication => {
                    format!(
                        "standby: slot {:?} is streaming to another connection",
                        config.source.slot
                    )
                }
                SourceMode::Notify => {
                    "standby: another instance delivers from the outbox".to_owned()
                }
            });
            tracing::info!(error = %error, "standing by: another instance holds the slot; taking over when it is released");
            STANDBY_RETRY
        } else if error.is_slot_lost() {
            // Said as it is: /readyz shows what a person must do.
            health.not_ready(error.to_string());
            let wait = delay;
            delay = (delay * 2).min(MAX_RETRY);
            wait
        } else {
            health.not_ready(format!("reconnecting: {error}"));
            tracing::warn!(error = %error, retry_in = ?delay, resume_from = %positions.resume(), "replication session ended; reconnecting");
            let wait = delay;
            delay = (delay * 2).min(MAX_RETRY);
            wait
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shutdown.requested() => break Ok(()),
        }
    };
    watcher.abort();
    follow_pauses.abort();
    status.abort();
    result
}

/// A session's own stop: requested when the process is asked to stop, or
/// when the wanted webhooks differ from those the session runs with
/// (`running`, checked at once too); then `Ending::Reload` first says which
/// webhooks retire, and `reloaded_to` keeps what the session ends for. The
/// task must be aborted when the session ends.
fn session_stop(
    process: &Shutdown,
    wanted: &watch::Receiver<Arc<Wanted>>,
    running: Arc<Wanted>,
    reloaded_to: Arc<std::sync::Mutex<Option<Arc<Wanted>>>>,
) -> (Shutdown, watch::Receiver<Ending>, JoinHandle<()>) {
    let (trigger, stop) = Shutdown::new();
    let (ending_tx, ending) = watch::channel(Ending::Running);
    let (mut process, mut wanted) = (process.clone(), wanted.clone());
    let forwarder = tokio::spawn(async move {
        let mut now = wanted.borrow_and_update().clone();
        // Only invalid rows changed: the status shows them.
        while !now.differs_from(&running) {
            tokio::select! {
                () = process.requested() => return trigger.request(),
                changed = wanted.changed() => {
                    if changed.is_err() {
                        return std::future::pending().await;
                    }
                    now = wanted.borrow_and_update().clone();
                }
            }
        }
        let before: Vec<_> = running.webhooks().cloned().collect();
        let after: Vec<_> = now.webhooks().cloned().collect();
        let retire = Changes::between(&before, &after)
            .retired
            .into_iter()
            .collect();
        ending_tx.send_replace(Ending::Reload {
            retire: Arc::new(retire),
        });
        if let Ok(mut to) = reloaded_to.lock() {
            *to = Some(now);
        }
        trigger.request();
    });
    (stop, ending, forwarder)
}

/// Logs what a reload changed (names and which settings, never values)
/// and notes the retired webhooks whose spooled rows become dead letters.
fn report_changes(
    before: Option<&[WebhookConfig]>,
    now: &Wanted,
    next: &Webhooks,
    cut_over: Lsn,
    to_retire: &mut Vec<(String, String)>,
) {
    let Some(before) = before else {
        if next.len() == 0 {
            tracing::warn!(
                "no enabled webhook subscribes to save_lead: changes are confirmed without delivery"
            );
        }
        for hook in next.describe() {
            tracing::info!(webhook = %hook, "delivering to");
        }
        return;
    };
    let after: Vec<_> = now.webhooks().cloned().collect();
    let changes = Changes::between(before, &after);
    for name in &changes.added {
        tracing::info!(webhook = %name, %cut_over, "webhook added: it receives the changes committed after the cut-over position");
    }
    for (name, reason) in &changes.retired {
        tracing::warn!(webhook = %name, %reason, "webhook stopped: what it still held goes to the dead letters");
        to_retire.push((name.clone(), reason.clone()));
    }
    for (name, settings) in &changes.changed {
        tracing::info!(webhook = %name, changed = %settings.join(", "), "webhook changed; its next deliveries use the new settings");
    }
}

/// Moves the spooled rows of retired webhooks to the dead letters; what
/// cannot be moved yet (database away) is tried again before the next session.
async fn retire_spooled(db: &Database, config: &Config, to_retire: &mut Vec<(String, String)>) {
    if to_retire.is_empty() {
        return;
    }
    let schema = &config.database.schema;
    let store = SpoolStore::new(db.clone(), schema).for_shard(config.source.shard);
    let dead_letters = crate::setup::objects::dead_letter_table(schema);
    let mut left = Vec::new();
    for (name, reason) in to_retire.drain(..) {
        match store.retire(&name, &reason, &dead_letters).await {
            Ok(0) => {}
            Ok(moved) => {
                tracing::warn!(webhook = %name, moved, %reason, "moved the webhook's spooled changes to the dead letters")
            }
            Err(e) if e.is_missing_table() => {}
            Err(e) => {
                tracing::error!(webhook = %name, error = %e, "cannot move the webhook's spooled changes to the dead letters yet; trying again");
                left.push((name, reason));
            }
        }
    }
    *to_retire = left;
}

/// Applies the pauses as they change; logs each pause and resume.
async fn apply_pauses(mut paused: watch::Receiver<BTreeSet<String>>, pauses: Pauses) {
    loop {
        let now = paused.borrow_and_update().clone();
        let (newly, resumed) = pauses.set(now);
        for name in newly {
            tracing::warn!(webhook = %name, "paused: its changes wait in the spool until `leadhook webhooks resume`");
        }
        for name in resumed {
            tracing::info!(webhook = %name, "resumed: delivering what waited in the spool, in order");
        }
        if paused.changed().await.is_err() {
            return;
        }
    }
}
