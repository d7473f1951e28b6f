//! The sidecar: wires source → lead mapping → delivery → checkpoint for one
//! replication session, and starts a new session with backoff whenever one
//! ends (lost connection, Postgres restart). A new session resumes from the
//! last confirmed position, so changes in flight are delivered again with
//! the same `webhook-id`: at-least-once, never lost.
//!
//! A stop request (SIGTERM/SIGINT) ends the session gracefully: the source
//! stops reading, deliveries in flight get `admin.shutdown_grace` to finish,
//! and the position of everything handled is confirmed before closing.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;
use tokio_postgres::Client;

use crate::admin::{self, AdminError, Health};
use crate::checkpoint::{Checkpoint, Positions};
use crate::config::{Config, SourceMode};
use crate::database::{Database, DatabaseError};
use crate::dead_letter::DeadLetterStore;
use crate::delivery::{DeliveryError, Webhooks};
use crate::lead::{LeadError, LeadMapping, LeadStage};
use crate::lsn::Lsn;
use crate::shutdown::Shutdown;
use crate::source::notify::{OutboxConnection, OutboxError, OutboxSource};
use crate::source::outbox::Outbox;
use crate::source::prerequisites::{self, PrerequisiteError};
use crate::source::replication::{ReplicationConnection, ReplicationError, ServerIdentity};
use crate::source::slot::{self, SlotError};
use crate::source::{Source, SourceError};

/// Changes buffered between the source and the lead stage.
const CHANGE_BUFFER: usize = 128;
const FIRST_RETRY: Duration = Duration::from_millis(500);
const MAX_RETRY: Duration = Duration::from_secs(30);
/// A standby polls the slot this often, so it takes over within seconds.
const STANDBY_RETRY: Duration = Duration::from_secs(1);

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
    #[error(transparent)]
    Slot(#[from] SlotError),
    #[error("lead mapping: {0}")]
    Lead(#[from] LeadError),
    /// Not a failure: a lagging webhook drained its queue and needs its
    /// backlog streamed again.
    #[error("a lagging webhook caught up")]
    CaughtUp,
    #[error("{0}")]
    Outbox(#[from] OutboxError),
    /// Not a failure: asked to stop, and stopped.
    #[error("stopped")]
    Stopped,
}

impl SessionError {
    /// Errors a person must fix; retrying would only hide them.
    fn into_fatal(self) -> Result<SidecarError, SessionError> {
        match self {
            SessionError::Prerequisites(e) if e.is_fatal() => Ok(SidecarError::Prerequisites(e)),
            SessionError::Slot(e @ SlotError::Missing(_)) => {
                Ok(SidecarError::Prerequisites(PrerequisiteError::Unmet(vec![
                    e.to_string(),
                ])))
            }
            SessionError::Replication(e) if e.is_refusal() => Ok(SidecarError::Refused(e)),
            other => Err(other),
        }
    }

    /// Another instance holds the slot: this one is a standby.
    fn is_standby(&self) -> bool {
        matches!(self, SessionError::Replication(e) if e.is_slot_in_use())
            || matches!(self, SessionError::Outbox(OutboxError::Locked))
    }
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
    };
    let mut positions = Positions::at(Lsn::ZERO, webhooks.len());
    let mut delay = FIRST_RETRY;
    let result = loop {
        let started = tokio::time::Instant::now();
        let error = match ctx.run(&mut positions).await.into_fatal() {
            Ok(fatal) => {
                health.not_ready(fatal.to_string().lines().next().unwrap_or_default());
                break Err(fatal);
            }
            Err(SessionError::Stopped) => {
                tracing::info!(confirmed = %positions.resume(), "stopped");
                break Ok(());
            }
            Err(SessionError::CaughtUp) => {
                tracing::info!(resume_from = %positions.resume(), "a lagging webhook caught up; streaming its backlog again");
                continue;
            }
            Err(transient) => transient,
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

/// What every session shares.
struct Session<'a> {
    config: &'a Config,
    db: &'a Database,
    webhooks: &'a Webhooks,
    dead_letters: Arc<DeadLetterStore>,
    health: &'a Arc<Health>,
    /// Requested when the process is asked to stop.
    shutdown: Shutdown,
}

impl Session<'_> {
    /// One session: connect, check, stream until something fails or a stop
    /// is asked for. `positions` is kept up to date for the next session.
    async fn run(&self, positions: &mut Positions) -> SessionError {
        if self.config.source.mode == SourceMode::Notify {
            return match self.drain_outbox().await {
                Ok(never) => match never {},
                Err(e) => e,
            };
        }
        self.health.not_ready(format!("connecting to {}", self.db));
        let mut shutdown = self.shutdown.clone();
        // Nothing streams yet, so a stop here needs no winding down.
        let started = tokio::select! {
            started = self.start_stream(positions) => started,
            () = shutdown.requested() => return SessionError::Stopped,
        };
        let started = match started {
            Ok(started) => started,
            Err(e) => return e,
        };
        let checkpoint = started.checkpoint.clone();
        let error = match self.stream(started).await {
            Ok(never) => match never {},
            Err(e) => e,
        };
        *positions = checkpoint.positions();
        error
    }

    /// Connects, checks, opens the slot (re-creating a lost one) and starts
    /// replication where the slot is. Positions kept from an earlier session
    /// are checked against this server's WAL history first.
    async fn start_stream(&self, positions: &Positions) -> Result<Started, SessionError> {
        let (config, source) = (self.config, &self.config.source);
        let sql = Arc::new(self.db.sql().await?);
        let inspection = prerequisites::prepare(&sql, config).await?;
        let heartbeat = prerequisites::heartbeat_interval(&sql).await?;
        let mut conn = ReplicationConnection::connect(self.db).await?;
        let server = conn.identify_system().await?;
        let slot = slot::open(
            &sql,
            self.db,
            config,
            &server,
            positions.confirmed_to_server(),
            self.health,
        )
        .await?;
        let (positions, discarded) = positions.start_on(&server, slot);
        match discarded {
            Some(why) if why.is_other_history() => {
                tracing::warn!(reason = %why, from = %slot.confirmed,
                "discarding the positions kept in memory: they belong to another WAL history; streaming from the slot's position")
            }
            Some(why) => tracing::info!(reason = %why, from = %slot.confirmed,
                "streaming again from the slot's position; changes after it are delivered again"),
            None => {}
        }
        // 0/0: where the slot is. A position of ours above it would make
        // the server skip every commit in between.
        conn.start_replication(&source.slot, &source.publication, Lsn::ZERO)
            .await?;
        Ok(Started {
            sql,
            inspection,
            heartbeat,
            conn,
            system: ServerIdentity::system_tag(server.system_id),
            checkpoint: Arc::new(Checkpoint::new(&positions)),
        })
    }

    /// Notify mode: deliver from the trigger outbox (see `source::notify`).
    async fn drain_outbox(&self) -> Result<Infallible, SessionError> {
        let config = self.config;
        self.health.not_ready(format!("connecting to {}", self.db));
        let mut shutdown = self.shutdown.clone();
        let setup = async {
            let (sql, doorbell) = self.db.sql_with_doorbell().await?;
            prerequisites::prepare(&sql, config).await?;
            Ok::<_, SessionError>(OutboxConnection::open(sql, doorbell, Outbox::new(config)).await?)
        };
        let conn = tokio::select! {
            ready = setup => ready?,
            () = shutdown.requested() => return Err(SessionError::Stopped),
        };
        tracing::info!(database = %self.db, outbox = %conn.outbox().table(), "delivering from the outbox");
        self.health.ready();

        let checkpoint = Arc::new(Checkpoint::for_outbox(self.webhooks.len()));
        let mut workers = JoinSet::new();
        let caught_up = Arc::new(Notify::new());
        let dispatcher =
            self.webhooks
                .spawn(&mut workers, &checkpoint, &self.dead_letters, &caught_up);
        let mut source = OutboxSource::new(
            conn,
            checkpoint.clone(),
            dispatcher,
            config.source.poll_interval,
        );
        let ended = tokio::select! {
            result = source.run(&mut shutdown) => result.map_err(SessionError::from),
            // With no webhooks the set is empty and this branch stays off.
            Some(_) = workers.join_next() => Err(SourceError::Downstream.into()),
        };
        let error = match ended {
            Ok(()) => {
                self.health.not_ready("shutting down");
                let drained = async { while workers.join_next().await.is_some() {} };
                let left = source.finish(drained, config.admin.shutdown_grace).await?;
                tracing::info!(left_in_outbox = left, "deleted every handled row; stopped");
                SessionError::Stopped
            }
            Err(e) => e,
        };
        workers.abort_all();
        self.health.not_ready("session ended");
        Err(error)
    }

    async fn stream(&self, started: Started) -> Result<Infallible, SessionError> {
        let (config, source) = (self.config, &self.config.source);
        let Started {
            sql,
            inspection,
            heartbeat,
            conn,
            system,
            checkpoint,
        } = started;
        let checkpoint = &checkpoint;
        let mut shutdown = self.shutdown.clone();
        tracing::info!(database = %self.db, slot = %source.slot, from = %checkpoint.confirmed(), "streaming changes");
        self.health.ready();

        let table = config.table();
        let quoted = table.quoted();
        let (changes_tx, changes_rx) = mpsc::channel(CHANGE_BUFFER);
        let mut workers = JoinSet::new();
        let caught_up = Arc::new(Notify::new());
        let lead = LeadStage {
            mapping: LeadMapping::new(&source.columns, inspection.key, quoted),
            sql: sql.clone(),
            dispatcher: self.webhooks.spawn(
                &mut workers,
                checkpoint,
                &self.dead_letters,
                &caught_up,
            ),
        };
        let mut lead = tokio::spawn(lead.run(changes_rx));
        let probe = tokio::spawn(slot::monitor(
            sql,
            checkpoint.clone(),
            heartbeat,
            config.database.schema.clone(),
            source.slot.clone(),
        ));
        let mut source = Source::new(
            conn,
            checkpoint.clone(),
            changes_tx,
            table,
            system,
            heartbeat,
        );
        // Whichever stage stops first ends the session; aborting the others
        // abandons their in-flight work, which the next session redelivers.
        let ended = tokio::select! {
            result = source.run(&mut shutdown) => result.map_err(SessionError::from),
            result = &mut lead => Err(match result {
                Ok(Err(e)) => e.into(),
                _ => SourceError::Downstream.into(),
            }),
            // With no webhooks the set is empty and this branch stays off.
            Some(_) = workers.join_next() => Err(SourceError::Downstream.into()),
            _ = caught_up.notified() => Err(SessionError::CaughtUp),
        };
        probe.abort();
        let error = match ended {
            Ok(()) => {
                self.health.not_ready("shutting down");
                let drained = async {
                    let _ = (&mut lead).await;
                    while workers.join_next().await.is_some() {}
                };
                let confirmed = source.finish(drained, config.admin.shutdown_grace).await;
                tracing::info!(%confirmed, "confirmed everything handled; replication stream closed");
                SessionError::Stopped
            }
            Err(e) => e,
        };
        lead.abort();
        workers.abort_all();
        self.health.not_ready("session ended");
        Err(error)
    }
}

/// A started replication session, ready to stream.
struct Started {
    /// For reading back unchanged large values and watching the slot.
    sql: Arc<Client>,
    inspection: prerequisites::Inspection,
    heartbeat: Duration,
    conn: ReplicationConnection,
    /// The server's system identifier, folded: part of every change id.
    system: u32,
    checkpoint: Arc<Checkpoint>,
}
