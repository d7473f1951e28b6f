//! The source: follows the leads table through logical replication and hands
//! its inserts and updates on, in commit order.
//!
//! The stream loop never blocks on the next stage: while the stage is full it
//! stops reading (so the server's backlog stays on the server's disk, not in
//! our memory) but keeps sending status updates, so `wal_sender_timeout`
//! never cuts off a consumer that is merely slow.

mod logical;
pub(crate) mod notify;
pub(crate) mod pgoutput;
pub(crate) mod replication;
pub(crate) mod slot;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;

use crate::change::SourceMessage;
use crate::change::backfill::{Chunk, Handoff};
use crate::checkpoint::{Checkpoint, TxSeq};
use crate::config::TableName;
use crate::lsn::Lsn;
use crate::memory::MemoryBudget;
use crate::shutdown::Shutdown;
use replication::{ReplicationConnection, ReplicationError, ReplicationMessage};

#[derive(Debug, thiserror::Error)]
pub(crate) enum SourceError {
    #[error(transparent)]
    Replication(#[from] ReplicationError),
    #[error("decoding the replication message at {at}: {error}")]
    Decode {
        at: Lsn,
        error: pgoutput::DecodeError,
    },
    #[error("the lead stage stopped")]
    Downstream,
    #[error("no message from the server for {0:?}: the connection is presumed dead")]
    Silent(std::time::Duration),
}

/// How soon a confirmed position that moved is sent to the server. The
/// heartbeat may be seconds apart; after a crash everything handled but
/// not yet confirmed to the server is delivered again, so confirming often
/// keeps those duplicates few.
const CONFIRM_EVERY: Duration = Duration::from_millis(200);

/// What woke the stream loop.
enum Step {
    Heartbeat,
    /// Time to send the confirmed position, if it moved.
    Confirm,
    Message(ReplicationMessage),
}

/// The transaction being streamed.
struct OpenTx {
    seq: TxSeq,
    commit_lsn: Lsn,
    commit_time: i64,
    xid: u32,
    /// Position of the next change within the transaction (every table).
    next_index: u32,
    /// The backfill chunk whose high watermark this transaction carries.
    high: Option<Arc<Chunk>>,
}

/// One replication session: a started stream and where its output goes.
pub(crate) struct Source {
    conn: ReplicationConnection,
    checkpoint: Arc<Checkpoint>,
    out: mpsc::Sender<SourceMessage>,
    table: TableName,
    /// The server's system identifier, folded: part of every change id.
    system: u32,
    /// Set by the table's Relation message; changes of other relations (a
    /// publication shared with other tables) are skipped.
    relation_id: Option<u32>,
    tx: Option<OpenTx>,
    /// A message the next stage had no room for yet.
    pending: Option<SourceMessage>,
    /// Change bytes held in memory, all stages together.
    budget: MemoryBudget,
    /// The pending change's size, while the budget has no room for it.
    unreserved: Option<usize>,
    heartbeat: Duration,
    /// The backfill chunk in flight, whose watermarks place its rows.
    backfill: Arc<Handoff>,
    /// Between a chunk's watermarks: deletes and truncates are handed on
    /// too, so the lead stage knows which leads changed.
    in_window: bool,
    /// Last position reported to the server, to skip redundant updates.
    reported: Lsn,
    last_report: tokio::time::Instant,
    changes: ChangeCounters,
}

/// `leadhook_changes_total` by operation, registered once per session (by
/// both sources): looking the counter up by its labels on every change was
/// 2 % of a drain's CPU.
struct ChangeCounters {
    insert: metrics::Counter,
    update: metrics::Counter,
    delete: metrics::Counter,
}

impl ChangeCounters {
    fn new() -> Self {
        let op = |op: &'static str| metrics::counter!("leadhook_changes_total", "op" => op);
        ChangeCounters {
            insert: op("insert"),
            update: op("update"),
            delete: op("delete"),
        }
    }

    fn of(&self, op: &str) -> &metrics::Counter {
        match op {
            "insert" => &self.insert,
            "update" => &self.update,
            _ => &self.delete,
        }
    }
}

impl Source {
    pub(crate) fn new(
        conn: ReplicationConnection,
        checkpoint: Arc<Checkpoint>,
        out: mpsc::Sender<SourceMessage>,
        table: TableName,
        system: u32,
        heartbeat: Duration,
        budget: MemoryBudget,
    ) -> Self {
        Source {
            conn,
            checkpoint,
            out,
            table,
            system,
            relation_id: None,
            tx: None,
            pending: None,
            budget,
            unreserved: None,
            heartbeat,
            backfill: Arc::default(),
            in_window: false,
            reported: Lsn::ZERO,
            last_report: tokio::time::Instant::now(),
            changes: ChangeCounters::new(),
        }
    }

    /// Places the rows of `backfill`'s chunks in the stream.
    pub(crate) fn with_backfill(mut self, backfill: Arc<Handoff>) -> Self {
        self.backfill = backfill;
        self
    }

    /// Streams until a shutdown is requested (`Ok`), the connection fails
    /// or the next stage goes away.
    pub(crate) async fn run(&mut self, shutdown: &mut Shutdown) -> Result<(), SourceError> {
        let mut heartbeat = tokio::time::interval(self.heartbeat);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // The server sends a keepalive every half wal_sender_timeout (four
        // beats); silence for twice the timeout means a dead connection
        // that TCP has not noticed yet.
        let silence_limit = self.heartbeat * 8;
        let mut last_heard = tokio::time::Instant::now();
        let mut was_reading = true;
        let mut confirm = tokio::time::interval(CONFIRM_EVERY.min(self.heartbeat));
        confirm.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            // Paused while the next stage is full, or while too many
            // transactions wait for confirmation (memory stays bounded).
            let reading = self.pending.is_none() && !self.checkpoint.backlogged();
            if reading && !was_reading {
                last_heard = tokio::time::Instant::now();
            }
            was_reading = reading;
            let step = tokio::select! {
                biased;
                () = shutdown.requested() => return Ok(()),
                _ = heartbeat.tick() => Step::Heartbeat,
                _ = confirm.tick() => Step::Confirm,
                memory = self.budget.reserve(self.unreserved.unwrap_or(0)), if self.unreserved.is_some() => {
                    if let Some(SourceMessage::Change(change)) = &mut self.pending {
                        change.memory = memory;
                    }
                    self.unreserved = None;
                    continue;
                }
                permit = self.out.reserve(), if self.pending.is_some() && self.unreserved.is_none() => {
                    let permit = permit.map_err(|_| SourceError::Downstream)?;
                    if let Some(message) = self.pending.take() {
                        permit.send(message);
                    }
                    continue;
                }
                message = self.conn.next(), if reading => {
                    last_heard = tokio::time::Instant::now();
                    Step::Message(message?)
                }
                () = tokio::time::sleep_until(last_heard + silence_limit), if reading => {
                    return Err(SourceError::Silent(silence_limit));
                }
            };
            let message = match step {
                Step::Heartbeat => {
                    // Half the silence allowed: ask the server to answer.
                    let ping = reading && last_heard.elapsed() >= silence_limit / 2;
                    self.heartbeat(!reading, ping).await?;
                    continue;
                }
                Step::Confirm => {
                    let confirmed = self.checkpoint.confirmed();
                    if confirmed != self.reported {
                        self.report(confirmed).await?;
                    }
                    continue;
                }
                Step::Message(message) => message,
            };
            // The messages already read go through here without the select
            // above, for as long as the next stage takes them at once.
            let mut next = Some(message);
            while let Some(message) = next.take() {
                self.on_message(message).await?;
                self.pass_on()?;
                if self.pending.is_none() && !self.checkpoint.backlogged() {
                    next = self.conn.buffered()?;
                }
            }
        }
    }

    async fn on_message(&mut self, message: ReplicationMessage) -> Result<(), SourceError> {
        match message {
            ReplicationMessage::XLogData { wal_start, data } => {
                let size = data.len();
                let message = pgoutput::decode(data).map_err(|error| SourceError::Decode {
                    at: wal_start,
                    error,
                })?;
                self.handle(wal_start, size, message);
            }
            ReplicationMessage::Keepalive {
                wal_end,
                reply_requested,
            } => {
                if self.tx.is_none() {
                    self.checkpoint.idle_at(wal_end);
                }
                tracing::trace!(%wal_end, reply_requested, in_tx = self.tx.is_some(), "keepalive");
                if reply_requested {
                    self.report(self.checkpoint.confirmed()).await?;
                }
            }
        }
        Ok(())
    }

    /// Hands the pending message (its memory reserved) to the next stage
    /// now if it has room, as it mostly has; otherwise it stays pending
    /// and the select in `run` waits for room.
    fn pass_on(&mut self) -> Result<(), SourceError> {
        if self.unreserved.is_some() {
            return Ok(());
        }
        let Some(message) = self.pending.take() else {
            return Ok(());
        };
        match self.out.try_send(message) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(message)) => {
                self.pending = Some(message);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(SourceError::Downstream),
        }
    }

    /// After `run` stopped: reads nothing more, lets the later stages drain
    /// (`drained`) for at most `grace` while still answering the server,
    /// then confirms what was handled and closes the stream.
    pub(crate) async fn finish(
        mut self,
        drained: impl Future<Output = ()>,
        grace: Duration,
    ) -> Lsn {
        // Closing our end lets the lead stage finish what it has and stop.
        let (closed, _) = mpsc::channel(1);
        self.out = closed;
        let mut heartbeat = tokio::time::interval(self.heartbeat);
        let deadline = tokio::time::sleep(grace);
        tokio::pin!(drained, deadline);
        loop {
            tokio::select! {
                _ = &mut drained => break,
                _ = &mut deadline => {
                    tracing::warn!(?grace, "shutdown grace period over; abandoning deliveries still in flight (they are redelivered on the next start)");
                    break;
                }
                _ = heartbeat.tick() => {
                    if self.heartbeat(true, false).await.is_err() {
                        break;
                    }
                }
            }
        }
        let confirmed = self.checkpoint.confirmed();
        if self.conn.send_status(confirmed, false).await.is_ok() {
            self.checkpoint.reported(confirmed);
        }
        self.conn.close().await;
        confirmed
    }

    /// Sends a status update when there is news, every other beat
    /// regardless, and every beat while paused (keepalives go unread then,
    /// so these updates alone keep `wal_sender_timeout` from firing).
    /// With `ping`, the update asks for an answer: after a long silence,
    /// that tells a quiet server from a dead connection.
    async fn heartbeat(&mut self, paused: bool, ping: bool) -> Result<(), SourceError> {
        let confirmed = self.checkpoint.confirmed();
        if ping
            || paused
            || confirmed != self.reported
            || self.last_report.elapsed() >= self.heartbeat * 2
        {
            self.report_with(confirmed, ping).await?;
        }
        Ok(())
    }

    async fn report(&mut self, confirmed: Lsn) -> Result<(), SourceError> {
        self.report_with(confirmed, false).await
    }

    async fn report_with(&mut self, confirmed: Lsn, ping: bool) -> Result<(), SourceError> {
        self.conn.send_status(confirmed, ping).await?;
        self.checkpoint.reported(confirmed);
        self.last_report = tokio::time::Instant::now();
        if confirmed != self.reported {
            tracing::debug!(%confirmed, "confirmed position");
        }
        self.reported = confirmed;
        Ok(())
    }
}
