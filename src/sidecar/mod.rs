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

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::admin::{self, AdminError, Health};
use crate::checkpoint::Positions;
use crate::config::{Config, SourceMode};
use crate::database::{Database, DatabaseError};
use crate::dead_letter::DeadLetterStore;
use crate::delivery::{DeliveryError, Webhooks};
use crate::lsn::Lsn;
use crate::memory::MemoryBudget;
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
/// with capped exponential backoff.
pub async fn run(
    config: Config,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<(), SidecarError> {
    let db = Database::from_url(config.database.url.expose())?;
    let health = Health::new();
    let admin = admin::serve(config.admin.listen, health.clone()).await?;
    // After the recorder is installed: webhooks register their metric handles.
    let webhooks = Webhooks::from_config(&config)?;
    tracing::info!(%admin, "admin endpoint listening (/metrics, /healthz, /readyz)");
    if webhooks.len() == 0 {
        tracing::warn!(
            "no enabled webhook subscribes to save_lead: changes are confirmed without delivery"
        );
    }
    for hook in webhooks.describe() {
        tracing::info!(webhook = %hook, "delivering to");
    }
    // The session watches this rather than being cancelled, so a stop
    // while streaming can finish deliveries and confirm them.
    let (trigger, mut shutdown) = Shutdown::new();
    let watcher = tokio::spawn(async move {
        stop.await;
        trigger.request();
    });
    let ctx = Session {
        config: &config,
        db: &db,
        webhooks: &webhooks,
        dead_letters: Arc::new(DeadLetterStore::new(db.clone(), &config.database.schema)),
        health: &health,
        shutdown: shutdown.clone(),
        memory: MemoryBudget::new(config.memory),
    };
    let mut positions = Positions::at(Lsn::ZERO, webhooks.len());
    let mut delay = FIRST_RETRY;
    let result = loop {
        let started = tokio::time::Instant::now();
        let error = match ctx.run(&mut positions).await {
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
    result
}
