//! The sidecar: wires source → lead mapping → delivery → checkpoint for one
//! replication session, and starts a new session with backoff whenever one
//! ends (lost connection, Postgres restart). A new session resumes from the
//! last confirmed position, so changes in flight are delivered again with
//! the same `webhook-id`: at-least-once, never lost.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;

use crate::checkpoint::{Checkpoint, Positions};
use crate::config::Config;
use crate::database::{Database, DatabaseError};
use crate::dead_letter::DeadLetterStore;
use crate::delivery::{DeliveryError, Webhooks};
use crate::lead::{LeadError, LeadMapping, LeadStage};
use crate::lsn::Lsn;
use crate::source::prerequisites::{self, PrerequisiteError};
use crate::source::replication::{ReplicationConnection, ReplicationError, quote_identifier};
use crate::source::{Source, SourceError};

/// Changes buffered between the source and the lead stage.
const CHANGE_BUFFER: usize = 128;
const FIRST_RETRY: Duration = Duration::from_millis(500);
const MAX_RETRY: Duration = Duration::from_secs(30);

/// Why the sidecar stopped for good (everything else is retried).
#[derive(Debug, thiserror::Error)]
pub enum SidecarError {
    #[error(transparent)]
    Database(#[from] DatabaseError),
    #[error(transparent)]
    Delivery(#[from] DeliveryError),
    #[error("the database is not ready for leadhook:\n{0}")]
    Prerequisites(PrerequisiteError),
    #[error("the replication connection was refused: {0}")]
    Refused(ReplicationError),
}

/// Why one session ended.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error(transparent)]
    Database(#[from] DatabaseError),
    #[error("{}", crate::database::with_causes(.0))]
    Sql(#[from] tokio_postgres::Error),
    #[error(transparent)]
    Prerequisites(#[from] PrerequisiteError),
    #[error("replication: {0}")]
    Replication(#[from] ReplicationError),
    #[error("replication: {0}")]
    Source(#[from] SourceError),
    #[error("lead mapping: {0}")]
    Lead(#[from] LeadError),
    /// Not a failure: a lagging webhook drained its queue and needs its
    /// backlog streamed again.
    #[error("a lagging webhook caught up")]
    CaughtUp,
}

impl SessionError {
    /// Errors a person must fix; retrying would only hide them.
    fn into_fatal(self) -> Result<SidecarError, SessionError> {
        match self {
            SessionError::Prerequisites(e) if e.is_fatal() => Ok(SidecarError::Prerequisites(e)),
            SessionError::Replication(e) if is_refusal(&e) => Ok(SidecarError::Refused(e)),
            other => Err(other),
        }
    }
}

/// Bad password, no such role or database, no replication right: a
/// reconnect cannot fix these.
fn is_refusal(e: &ReplicationError) -> bool {
    matches!(e, ReplicationError::Auth(_))
        || e.code()
            .is_some_and(|code| code.starts_with("28") || code == "3D000" || code == "42501")
}

/// Runs the sidecar until a fatal error. Transient failures are logged and
/// retried with capped exponential backoff.
pub async fn run(config: Config) -> Result<(), SidecarError> {
    let db = Database::from_url(config.database.url.expose())?;
    let webhooks = Webhooks::from_config(&config)?;
    if webhooks.len() == 0 {
        tracing::warn!(
            "no enabled webhook subscribes to save_lead: changes are confirmed without delivery"
        );
    }
    for hook in webhooks.describe() {
        tracing::info!(webhook = %hook, "delivering to");
    }
    let dead_letters = Arc::new(DeadLetterStore::new(db.clone(), &config.database.schema));
    let mut positions = Positions::at(Lsn::ZERO, webhooks.len());
    let mut delay = FIRST_RETRY;
    loop {
        let started = tokio::time::Instant::now();
        let ended = session(&config, &db, &webhooks, &dead_letters, &mut positions).await;
        let error = match ended.into_fatal() {
            Ok(fatal) => return Err(fatal),
            Err(SessionError::CaughtUp) => {
                tracing::info!(resume_from = %positions.resume(), "a lagging webhook caught up; streaming its backlog again");
                continue;
            }
            Err(transient) => transient,
        };
        if started.elapsed() > MAX_RETRY {
            delay = FIRST_RETRY;
        }
        tracing::warn!(error = %error, retry_in = ?delay, resume_from = %positions.resume(), "replication session ended; reconnecting");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(MAX_RETRY);
    }
}

/// One session: connect, check, stream until something fails. `positions`
/// is kept up to date for the next session.
async fn session(
    config: &Config,
    db: &Database,
    webhooks: &Webhooks,
    dead_letters: &Arc<DeadLetterStore>,
    positions: &mut Positions,
) -> SessionError {
    let checkpoint = Arc::new(Checkpoint::new(positions));
    let error = match stream(config, db, webhooks, dead_letters, &checkpoint).await {
        Ok(never) => match never {},
        Err(e) => e,
    };
    *positions = checkpoint.positions();
    error
}

async fn stream(
    config: &Config,
    db: &Database,
    webhooks: &Webhooks,
    dead_letters: &Arc<DeadLetterStore>,
    checkpoint: &Arc<Checkpoint>,
) -> Result<Infallible, SessionError> {
    let source = &config.source;
    let sql = db.sql().await?;
    let inspection = prerequisites::prepare(&sql, config).await?;
    let heartbeat = prerequisites::heartbeat_interval(&sql).await?;
    let mut conn = ReplicationConnection::connect(db).await?;
    conn.start_replication(&source.slot, &source.publication, checkpoint.confirmed())
        .await?;
    tracing::info!(database = %db, slot = %source.slot, from = %checkpoint.confirmed(), "streaming changes");

    let table = config.table();
    let quoted = format!(
        "{}.{}",
        quote_identifier(&table.schema),
        quote_identifier(&table.name)
    );
    let (changes_tx, changes_rx) = mpsc::channel(CHANGE_BUFFER);
    let mut workers = JoinSet::new();
    let caught_up = Arc::new(Notify::new());
    let lead = LeadStage {
        mapping: LeadMapping::new(&source.columns, inspection.key, quoted),
        sql,
        dispatcher: webhooks.spawn(&mut workers, checkpoint, dead_letters, &caught_up),
    };
    let source = Source::new(conn, checkpoint.clone(), changes_tx, table, heartbeat);
    // Whichever stage stops first ends the session; dropping the others
    // aborts their in-flight work, which the next session redelivers.
    let error = tokio::select! {
        error = source.run() => SessionError::from(error),
        result = lead.run(changes_rx) => match result {
            Err(e) => e.into(),
            Ok(()) => SourceError::Downstream.into(),
        },
        _ = workers.join_next() => SourceError::Downstream.into(),
        _ = caught_up.notified() => SessionError::CaughtUp,
    };
    workers.abort_all();
    Err(error)
}
