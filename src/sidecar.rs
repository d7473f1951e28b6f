//! The sidecar: wires source → lead mapping → delivery → checkpoint for one
//! replication session, and starts a new session with backoff whenever one
//! ends (lost connection, Postgres restart). A new session resumes from the
//! last confirmed position, so changes in flight are delivered again with
//! the same `webhook-id`: at-least-once, never lost.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::checkpoint::Checkpoint;
use crate::config::Config;
use crate::database::{Database, DatabaseError};
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
    #[error(transparent)]
    Sql(#[from] tokio_postgres::Error),
    #[error(transparent)]
    Prerequisites(#[from] PrerequisiteError),
    #[error("replication: {0}")]
    Replication(#[from] ReplicationError),
    #[error("replication: {0}")]
    Source(#[from] SourceError),
    #[error("lead mapping: {0}")]
    Lead(#[from] LeadError),
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
    let mut resume = Lsn::ZERO;
    let mut delay = FIRST_RETRY;
    loop {
        let started = tokio::time::Instant::now();
        let error = session(&config, &db, &webhooks, &mut resume).await;
        let error = match error.into_fatal() {
            Ok(fatal) => return Err(fatal),
            Err(transient) => transient,
        };
        if started.elapsed() > MAX_RETRY {
            delay = FIRST_RETRY;
        }
        tracing::warn!(error = %error, retry_in = ?delay, resume_from = %resume, "replication session ended; reconnecting");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(MAX_RETRY);
    }
}

/// One session: connect, check, stream until something fails. `resume` is
/// kept up to date with the confirmed position for the next session.
async fn session(
    config: &Config,
    db: &Database,
    webhooks: &Webhooks,
    resume: &mut Lsn,
) -> SessionError {
    let checkpoint = Arc::new(Checkpoint::new(*resume));
    let error = match stream(config, db, webhooks, &checkpoint).await {
        Ok(never) => match never {},
        Err(e) => e,
    };
    *resume = checkpoint.confirmed();
    error
}

async fn stream(
    config: &Config,
    db: &Database,
    webhooks: &Webhooks,
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
    let lead = LeadStage {
        mapping: LeadMapping::new(&source.columns, inspection.key, quoted),
        sql,
        dispatcher: webhooks.spawn(&mut workers),
        webhooks: webhooks.len(),
        checkpoint: checkpoint.clone(),
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
    };
    workers.abort_all();
    Err(error)
}
