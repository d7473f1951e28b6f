//! One session: connect, check, then stream changes (replication mode) or
//! deliver from the outbox (notify mode) until a stop is requested, a stage
//! fails, or a lagging webhook catches up.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;
use tokio_postgres::Client;

use super::SidecarError;
use super::stages::Stages;
use crate::admin::Health;
use crate::backfill::ChunkQuery;
use crate::backfill::reader::Reader;
use crate::change::backfill::Handoff;
use crate::checkpoint::{Checkpoint, Positions};
use crate::config::{Config, SourceMode};
use crate::database::{Database, DatabaseError};
use crate::dead_letter::DeadLetterStore;
use crate::delivery::spool::store::{SpoolError, SpoolStore};
use crate::delivery::spool::writer::Writer;
use crate::delivery::{DeliverySession, Dispatcher, Webhooks};
use crate::history::ServerIdentity;
use crate::lead::{LeadError, LeadMapping, LeadStage};
use crate::lsn::Lsn;
use crate::memory::MemoryBudget;
use crate::setup::outbox::Outbox;
use crate::setup::prerequisites::publication::shard_condition;
use crate::setup::prerequisites::{self, PrerequisiteError};
use crate::shutdown::Shutdown;
use crate::source::notify::{OutboxConnection, OutboxError, OutboxSource};
use crate::source::replication::{ReplicationConnection, ReplicationError};
use crate::source::slot::{self, SlotError};
use crate::source::{Source, SourceError};

/// Changes buffered between the source and the lead stage.
const CHANGE_BUFFER: usize = 128;

/// How a session ended without failing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SessionEnd {
    /// Asked to stop, and stopped: what was handled is confirmed.
    Stopped,
    /// A lagging webhook drained its queue and needs its backlog streamed
    /// again.
    CaughtUp,
}

/// Why one session failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum SessionError {
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
    #[error("{0}")]
    Outbox(#[from] OutboxError),
    #[error("spool: {0}")]
    Spool(#[from] SpoolError),
}

impl SessionError {
    /// Errors a person must fix; retrying would only hide them.
    pub(super) fn into_fatal(self) -> Result<SidecarError, SessionError> {
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

    /// The slot is lost and is not to be re-created (`on_slot_lost = "stop"`).
    pub(super) fn is_slot_lost(&self) -> bool {
        matches!(self, SessionError::Slot(e) if e.is_lost())
    }

    /// Another instance holds the slot: this one is a standby.
    pub(super) fn is_standby(&self) -> bool {
        matches!(self, SessionError::Replication(e) if e.is_slot_in_use())
            || matches!(self, SessionError::Outbox(OutboxError::Locked))
    }
}

/// What every session shares.
pub(super) struct Session<'a> {
    pub(super) config: &'a Config,
    pub(super) db: &'a Database,
    pub(super) webhooks: &'a Webhooks,
    pub(super) dead_letters: Arc<DeadLetterStore>,
    pub(super) health: &'a Arc<Health>,
    /// Requested when the process is asked to stop.
    pub(super) shutdown: Shutdown,
    /// Change bytes held in memory, all stages together.
    pub(super) memory: MemoryBudget,
    /// Set when the session winds down for a reload (see `delivery::Ending`).
    pub(super) ending: tokio::sync::watch::Receiver<crate::delivery::Ending>,
}

impl Session<'_> {
    /// One session: connect, check, stream until something fails, a stop
    /// is asked for or a lagging webhook caught up. `positions` is kept up
    /// to date for the next session.
    pub(super) async fn run(&self, positions: &mut Positions) -> Result<SessionEnd, SessionError> {
        self.health.not_ready(format!("connecting to {}", self.db));
        if self.config.source.mode == SourceMode::Notify {
            return self.drain_outbox(positions).await;
        }
        let Some(started) = self.unless_stopped(self.start_stream(positions)).await else {
            return Ok(SessionEnd::Stopped);
        };
        let started = started?;
        let checkpoint = started.checkpoint.clone();
        let end = self.stream(started, positions).await;
        *positions = checkpoint.positions();
        end
    }

    /// Runs a session's setup unless a stop is requested first (`None`):
    /// nothing streams yet, so a stop then needs no winding down.
    async fn unless_stopped<T>(&self, setup: impl Future<Output = T>) -> Option<T> {
        let mut shutdown = self.shutdown.clone();
        tokio::select! {
            done = setup => Some(done),
            () = shutdown.requested() => None,
        }
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
        conn.limit_messages(source.max_message_size);
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
        slot::failover::ensure(&sql, &mut conn, config).await?;
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
    /// `positions` carries the rows each webhook handled while another had
    /// not, from one session to the next.
    async fn drain_outbox(&self, positions: &mut Positions) -> Result<SessionEnd, SessionError> {
        let config = self.config;
        let setup = async {
            let (sql, doorbell) = self.db.sql_with_doorbell().await?;
            prerequisites::prepare(&sql, config).await?;
            Ok::<_, SessionError>(OutboxConnection::open(sql, doorbell, Outbox::new(config)).await?)
        };
        let Some(conn) = self.unless_stopped(setup).await else {
            return Ok(SessionEnd::Stopped);
        };
        let conn = conn?;
        tracing::info!(database = %self.db, outbox = %conn.outbox().table(), "delivering from the outbox");
        self.health.ready();

        let checkpoint = Arc::new(Checkpoint::for_outbox(self.webhooks.len()));
        let (changes_tx, changes_rx) = mpsc::channel(CHANGE_BUFFER);
        let (mut stages, dispatcher) = self.spawn_workers(&checkpoint).await?;
        let lead = LeadStage::for_outbox(dispatcher, config.source.columns.clone());
        stages.lead = Some(tokio::spawn(lead.run(changes_rx)));
        let source = OutboxSource::new(
            conn,
            checkpoint,
            changes_tx,
            config.source.poll_interval,
            self.memory.clone(),
            handled_before(positions, self.webhooks.len()),
        );
        self.deliver(source, stages, positions).await
    }

    /// Replication mode: the started stream feeds the source, the lead
    /// stage and delivery.
    async fn stream(
        &self,
        started: Started,
        positions: &mut Positions,
    ) -> Result<SessionEnd, SessionError> {
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
        tracing::info!(database = %self.db, slot = %source.slot, from = %checkpoint.confirmed(), "streaming changes");
        self.health.ready();

        let table = config.table();
        let quoted = table.quoted();
        let (changes_tx, changes_rx) = mpsc::channel(CHANGE_BUFFER);
        let (mut stages, dispatcher) = self.spawn_workers(checkpoint).await?;
        let handoff = Arc::new(Handoff::default());
        let backfill = Reader {
            db: self.db.clone(),
            schema: config.database.schema.clone(),
            query: ChunkQuery::new(
                quoted.clone(),
                inspection.key.clone(),
                source.columns.clone(),
                self.webhooks.iter().any(|h| !h.config.filter.is_empty()),
                source
                    .shard
                    .filter(|s| s.count > 1)
                    .map(|shard| shard_condition(&inspection.key, shard, "l.")),
            ),
            handoff: handoff.clone(),
            checkpoint: checkpoint.clone(),
            webhooks: self
                .webhooks
                .iter()
                .map(|h| (h.name.clone(), h.config.backfill))
                .collect(),
            budget: self.memory.clone(),
            shard: source.shard_of(),
            poll: source.poll_interval,
            session: fastrand::u64(..),
        };
        let mapping = LeadMapping::new(&source.columns, inspection.key, quoted);
        let lead = LeadStage::for_stream(mapping, sql.clone(), dispatcher);
        stages.lead = Some(tokio::spawn(lead.run(changes_rx)));
        stages.beside.push(tokio::spawn(slot::monitor(
            sql,
            checkpoint.clone(),
            heartbeat,
            config.database.schema.clone(),
            source.slot.clone(),
            self.health.clone(),
        )));
        stages.beside.push(tokio::spawn(backfill.run()));
        let source = Source::new(
            conn,
            checkpoint.clone(),
            changes_tx,
            table,
            system,
            heartbeat,
            self.memory.clone(),
        )
        .with_backfill(handoff);
        self.deliver(source, stages, positions).await
    }

    /// Starts the spool's writer and one delivery worker per webhook (those
    /// the spool has rows for start spooling); returns them as the stages of
    /// a session (the caller adds the rest) and what feeds their queues.
    async fn spawn_workers(
        &self,
        checkpoint: &Arc<Checkpoint>,
    ) -> Result<(Stages, Dispatcher), SessionError> {
        let schema = &self.config.database.schema;
        let shard = self.config.source.shard;
        let spool_store = Arc::new(SpoolStore::new(self.db.clone(), schema).for_shard(shard));
        let spools = self.webhooks.iter().any(|h| h.policy.spool);
        // Without a webhook that spools the table may be missing; rows left
        // in one from before are still drained.
        let depths = match spool_store.depths().await {
            Ok(depths) => depths,
            Err(_) if !spools => Default::default(),
            Err(e) => return Err(e.into()),
        };
        for name in self.webhooks.resume_spooling(&depths) {
            tracing::warn!(webhook = %name, spool = %spool_store.table(),
                "the spool has rows for a webhook that is not configured (or not enabled); they stay there until it is again");
        }
        let (writer, spool) = Writer::new(
            SpoolStore::new(self.db.clone(), schema).for_shard(shard),
            checkpoint.clone(),
        );
        let session = DeliverySession {
            checkpoint: checkpoint.clone(),
            dead_letters: self.dead_letters.clone(),
            spool,
            spool_store,
            memory: self.memory.clone(),
            ending: self.ending.clone(),
        };
        let mut workers = JoinSet::new();
        let caught_up = Arc::new(Notify::new());
        let dispatcher = self.webhooks.spawn(&mut workers, &session, &caught_up);
        let stages = Stages {
            workers,
            caught_up,
            writer: tokio::spawn(writer.run()),
            lead: None,
            beside: Vec::new(),
        };
        Ok((stages, dispatcher))
    }

    /// What both modes share once set up: the source runs until a stop is
    /// requested, then the later stages get `admin.shutdown_grace` to finish
    /// and what they handled is settled. Otherwise whichever stage stops
    /// first ends the session; aborting the others abandons their in-flight
    /// work, which the next session redelivers.
    async fn deliver(
        &self,
        mut source: impl SessionSource,
        mut stages: Stages,
        positions: &mut Positions,
    ) -> Result<SessionEnd, SessionError> {
        let mut shutdown = self.shutdown.clone();
        let ended = tokio::select! {
            result = source.run(&mut shutdown) => match result {
                Ok(()) => None,
                Err(e) => Some(Err(e)),
            },
            end = stages.ended() => Some(end),
        };
        stages.stop_beside();
        let end = match ended {
            Some(end) => {
                source.keep(positions);
                end
            }
            None => {
                self.health.not_ready("shutting down");
                let grace = self.config.admin.shutdown_grace;
                source
                    .finish(stages.drained(), grace, positions)
                    .await
                    .map(|()| SessionEnd::Stopped)
            }
        };
        drop(stages);
        self.health.not_ready("session ended");
        end
    }
}

/// A session's source, either mode, as [`Session::deliver`] drives it.
trait SessionSource {
    /// Reads and dispatches until a shutdown is requested (`Ok`) or
    /// something fails.
    async fn run(&mut self, shutdown: &mut Shutdown) -> Result<(), SessionError>;

    /// After `run` stopped: lets the later stages finish (`drained`) for at
    /// most `grace`, then settles what they handled (and keeps in
    /// `positions` what the next session needs of it).
    async fn finish(
        self,
        drained: impl Future<Output = ()>,
        grace: Duration,
        positions: &mut Positions,
    ) -> Result<(), SessionError>;

    /// The session failed: keeps in `positions` what the next one needs
    /// (replication mode reads it from the checkpoint instead).
    fn keep(&self, _positions: &mut Positions) {}
}

impl SessionSource for Source {
    async fn run(&mut self, shutdown: &mut Shutdown) -> Result<(), SessionError> {
        Ok(Source::run(self, shutdown).await?)
    }

    async fn finish(
        self,
        drained: impl Future<Output = ()>,
        grace: Duration,
        _positions: &mut Positions,
    ) -> Result<(), SessionError> {
        let confirmed = Source::finish(self, drained, grace).await;
        tracing::info!(%confirmed, "confirmed everything handled; replication stream closed");
        Ok(())
    }
}

impl SessionSource for OutboxSource {
    async fn run(&mut self, shutdown: &mut Shutdown) -> Result<(), SessionError> {
        Ok(OutboxSource::run(self, shutdown).await?)
    }

    async fn finish(
        self,
        drained: impl Future<Output = ()>,
        grace: Duration,
        positions: &mut Positions,
    ) -> Result<(), SessionError> {
        let (left, handled) = OutboxSource::finish(self, drained, grace).await?;
        positions.outbox_handled = handled;
        tracing::info!(left_in_outbox = left, "deleted every handled row; stopped");
        Ok(())
    }

    fn keep(&self, positions: &mut Positions) {
        positions.outbox_handled = self.handled_rows();
    }
}

/// What each of `webhooks` handled of the outbox in earlier sessions.
fn handled_before(positions: &Positions, webhooks: usize) -> Vec<std::collections::BTreeSet<i64>> {
    let mut handled = positions.outbox_handled.clone();
    handled.resize(webhooks, Default::default());
    handled
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
