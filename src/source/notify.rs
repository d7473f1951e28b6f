//! Notify mode's source: reads the trigger outbox in sequence order, hands
//! each row on to the lead stage (as replication mode's source hands on its
//! changes), and deletes a row only once every webhook has handled it. `NOTIFY` is only the doorbell: a periodic poll
//! catches rows whose notification was missed (sent while disconnected),
//! and at startup whatever is in the outbox is delivered.
//!
//! One instance delivers from an outbox at a time: it holds a session-level
//! advisory lock, and others stand by. That keeps each lead's changes in
//! order, which `FOR UPDATE SKIP LOCKED` sharing would not.

use std::collections::{BTreeSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio_postgres::Client;

use crate::change::{CapturedLead, SourceMessage};
use crate::checkpoint::{Checkpoint, Targets, TxSeq};
use crate::lsn::{Lsn, PG_EPOCH_OFFSET_MICROS};
use crate::memory::MemoryBudget;
use crate::setup::outbox::Outbox;
use crate::shutdown::Shutdown;
use postgres_protocol::escape::escape_identifier;

use crate::history::ServerIdentity;

/// Rows read per query, at most…
const BATCH: i64 = 500;
/// …and bytes of leads (beyond the first row): large rows are read a few
/// at a time, so one query never holds hundreds of megabytes.
const BATCH_BYTES: i64 = 4 << 20;
/// Rows dispatched but not yet deleted, at most (memory stays bounded).
const MAX_UNDELETED: usize = crate::checkpoint::OUTBOX_MAX_OPEN;
/// How often handled rows are deleted and the doorbell checked.
const TICK: Duration = Duration::from_millis(20);

#[derive(Debug, thiserror::Error)]
pub(crate) enum OutboxError {
    #[error("outbox: {}", crate::database::with_causes(.0))]
    Sql(#[from] tokio_postgres::Error),
    #[error("the lead stage stopped")]
    Downstream,
    #[error(
        "the outbox {0} is gone (dropped while leadhook ran?): re-create it with `leadhook setup --apply`"
    )]
    Missing(String),
    /// Another instance delivers from the outbox: this one stands by.
    #[error("another instance holds the outbox lock")]
    Locked,
}

/// An SQL connection that has taken an outbox over for one session: it
/// holds the outbox lock and listens to its channel.
pub(crate) struct OutboxConnection {
    sql: Client,
    /// Rung by the connection on every notification of the outbox channel.
    doorbell: Arc<Notify>,
    outbox: Outbox,
    /// The outbox table's oid and the server's folded system identifier:
    /// part of every `webhook-id` (see [`outbox_id`]).
    epoch: u32,
    system: u32,
}

impl OutboxConnection {
    /// Takes the outbox over on `sql`, whose notifications ring `doorbell`:
    /// its lock first ([`OutboxError::Locked`] if another instance has it),
    /// then `LISTEN` on its channel, then what every `webhook-id` needs.
    pub(crate) async fn open(
        sql: Client,
        doorbell: Arc<Notify>,
        outbox: Outbox,
    ) -> Result<OutboxConnection, OutboxError> {
        if !try_lock(&sql, &outbox).await? {
            return Err(OutboxError::Locked);
        }
        sql.batch_execute(&format!("LISTEN {}", escape_identifier(&outbox.channel())))
            .await?;
        let epoch = epoch(&sql, &outbox).await?;
        let system = system_tag(&sql).await?;
        Ok(OutboxConnection {
            sql,
            doorbell,
            outbox,
            epoch,
            system,
        })
    }

    pub(crate) fn outbox(&self) -> &Outbox {
        &self.outbox
    }
}

/// Delivers one session's rows from the outbox.
pub(crate) struct OutboxSource {
    conn: OutboxConnection,
    /// Positions here are read indexes: row n of this session is `Lsn(n)`.
    checkpoint: Arc<Checkpoint>,
    /// To the lead stage, like replication mode's source.
    changes: mpsc::Sender<SourceMessage>,
    poll_interval: Duration,
    /// Change bytes held in memory, all stages together.
    budget: MemoryBudget,
    /// Rows read but not yet deleted, in read order: (read index, seq).
    undeleted: VecDeque<(u64, i64)>,
    next_index: u64,
    /// Per webhook: rows it handled in an earlier session (by seq), not to
    /// be sent to it again; an entry is taken when its row is read.
    skip: Vec<BTreeSet<i64>>,
    counted: super::ChangeCounters,
}

impl OutboxSource {
    /// Reads from the start of the outbox on the first [`OutboxSource::run`].
    pub(crate) fn new(
        conn: OutboxConnection,
        checkpoint: Arc<Checkpoint>,
        changes: mpsc::Sender<SourceMessage>,
        poll_interval: Duration,
        budget: MemoryBudget,
        skip: Vec<BTreeSet<i64>>,
    ) -> OutboxSource {
        OutboxSource {
            conn,
            checkpoint,
            changes,
            poll_interval,
            budget,
            undeleted: VecDeque::new(),
            next_index: 0,
            skip,
            counted: super::ChangeCounters::new(),
        }
    }

    /// Per webhook, the rows still in the outbox that it has handled (those
    /// of earlier sessions it was not given again included): for the next
    /// session, so that a webhook that kept up is not sent them twice
    /// because another one had not.
    pub(crate) fn handled_rows(&self) -> Vec<BTreeSet<i64>> {
        let mut handled = self.skip.clone();
        for (webhook, rows) in handled.iter_mut().enumerate() {
            let done = self
                .undeleted
                .iter()
                .filter(|(index, _)| self.checkpoint.has_handled(webhook, Lsn(*index)))
                .map(|(_, seq)| *seq);
            rows.extend(done);
        }
        handled
    }

    /// `targets` without the webhooks that handled row `seq` in an earlier
    /// session (it counts as handled for them at once).
    fn not_again(&mut self, mut targets: Targets, seq: i64, tx: TxSeq) -> Targets {
        for (webhook, done) in self.skip.iter_mut().enumerate() {
            if done.remove(&seq) && targets.contains(webhook) {
                targets.remove(webhook);
                self.checkpoint.handled(webhook, tx);
            }
        }
        targets
    }

    /// Delivers until a shutdown is requested (`Ok`) or something fails.
    pub(crate) async fn run(&mut self, shutdown: &mut Shutdown) -> Result<(), OutboxError> {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_read = tokio::time::Instant::now();
        let mut read_now = true;
        loop {
            self.delete_handled().await?;
            let due = read_now || last_read.elapsed() >= self.poll_interval;
            if due && self.undeleted.len() < MAX_UNDELETED {
                // A full queue can hold a batch up for long; a stop must not wait for it.
                // Rows not yet dispatched are simply not handled: they stay in the outbox.
                read_now = tokio::select! {
                    read = self.read_batch() => read? > 0,
                    () = shutdown.requested() => return Ok(()),
                };
                last_read = tokio::time::Instant::now();
                if read_now {
                    continue;
                }
            }
            tokio::select! {
                () = shutdown.requested() => return Ok(()),
                () = self.conn.doorbell.notified() => read_now = true,
                _ = tick.tick() => {}
            }
        }
    }

    /// After `run` stopped: lets deliveries in flight finish (`drained`) for
    /// at most `grace`, then deletes what was handled.
    /// Returns the rows left and [`Self::handled_rows`].
    pub(crate) async fn finish(
        mut self,
        drained: impl Future<Output = ()>,
        grace: Duration,
    ) -> Result<(usize, Vec<BTreeSet<i64>>), OutboxError> {
        // The lead stage, then the workers, finish what they have and stop.
        let (closed, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.changes, closed));
        if tokio::time::timeout(grace, drained).await.is_err() {
            tracing::warn!(
                ?grace,
                "shutdown grace period over; abandoning deliveries still in flight (their rows stay in the outbox)"
            );
        }
        self.delete_handled().await?;
        Ok((self.undeleted.len(), self.handled_rows()))
    }

    /// Reads the next rows (in sequence order, skipping those in flight) and
    /// hands them on; returns how many.
    async fn read_batch(&mut self) -> Result<usize, OutboxError> {
        let in_flight: Vec<i64> = self.undeleted.iter().map(|(_, seq)| *seq).collect();
        let query = format!(
            "SELECT seq, op, lead_key, lead, captured, other_columns FROM (
                 SELECT seq, op, lead_key, lead::text AS lead, other_columns::text,
                        (extract(epoch FROM captured_at) * 1000000)::int8 AS captured,
                        sum(octet_length(lead::text) + coalesce(octet_length(other_columns::text), 0))
                            OVER (ORDER BY seq) AS upto
                 FROM {} WHERE seq <> ALL($1::int8[]) ORDER BY seq LIMIT $2) batch
             WHERE upto - octet_length(lead) - coalesce(octet_length(other_columns), 0) < $3::int8 ORDER BY seq",
            self.conn.outbox.table()
        );
        let rows = self
            .conn
            .sql
            .query(&query, &[&in_flight, &BATCH, &BATCH_BYTES])
            .await?;
        tracing::debug!(
            read = rows.len(),
            undeleted = self.undeleted.len(),
            "read outbox rows"
        );
        for row in &rows {
            let (seq, op, key, lead, captured): (i64, &str, &str, &str, i64) =
                (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
            let other_columns: Option<String> = row.get(5);
            let bytes = lead.len() + other_columns.as_ref().map_or(0, String::len);
            // The trigger captures inserts and updates only.
            let counted = match op {
                "insert" => &self.counted.insert,
                _ => &self.counted.update,
            };
            counted.increment(1);
            self.next_index += 1;
            let index = self.next_index;
            let tx = self.checkpoint.begin(Lsn(index));
            let targets = self.checkpoint.track(tx);
            let targets = self.not_again(targets, seq, tx);
            self.checkpoint.commit(tx, Lsn(index));
            self.undeleted.push_back((index, seq));
            let lead = CapturedLead {
                id: outbox_id(self.conn.system, self.conn.epoch, seq, captured),
                seq,
                tx,
                targets,
                commit_time: captured - PG_EPOCH_OFFSET_MICROS,
                key: lead_key(key),
                lead: lead.to_owned(),
                other_columns,
                memory: self.budget.reserve(bytes).await,
            };
            self.changes
                .send(SourceMessage::Captured(lead))
                .await
                .map_err(|_| OutboxError::Downstream)?;
        }
        Ok(rows.len())
    }

    async fn delete_handled(&mut self) -> Result<(), OutboxError> {
        let seqs = take_handled(&mut self.undeleted, self.checkpoint.confirmed());
        delete(&self.conn.sql, &self.conn.outbox, &seqs).await
    }
}

/// The rows every webhook has handled: a prefix in read order.
fn take_handled(undeleted: &mut VecDeque<(u64, i64)>, confirmed: Lsn) -> Vec<i64> {
    let mut seqs = Vec::new();
    while let Some(&(index, seq)) = undeleted.front() {
        if index > confirmed.0 {
            break;
        }
        seqs.push(seq);
        undeleted.pop_front();
    }
    seqs
}

async fn delete(sql: &Client, outbox: &Outbox, seqs: &[i64]) -> Result<(), OutboxError> {
    if !seqs.is_empty() {
        tracing::debug!(deleted = seqs.len(), "deleting handled outbox rows");
        let statement = format!("DELETE FROM {} WHERE seq = ANY($1::int8[])", outbox.table());
        sql.execute(&statement, &[&seqs]).await?;
    }
    Ok(())
}

/// Orders a lead's changes: the hash of its captured primary key.
fn lead_key(key: &str) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    key.hash(&mut hasher);
    hasher.finish()
}

/// `webhook-id` of an outbox row: `outbox-<system>-<outbox oid>-<seq>-<captured>`,
/// the same on every redelivery of the row, and never shared by two rows:
/// the oid tells a re-created outbox (whose sequence starts again) from the
/// old one, and the capture time (µs since 1970, hexadecimal) tells apart
/// rows that reuse a sequence number after a restore; the system tag keeps
/// database clusters apart.
fn outbox_id(system: u32, epoch: u32, seq: i64, captured: i64) -> String {
    format!("outbox-{system:08x}-{epoch}-{seq}-{captured:x}")
}

/// The outbox table's oid (see [`outbox_id`]); an error if it is gone.
async fn epoch(sql: &Client, outbox: &Outbox) -> Result<u32, OutboxError> {
    let row = sql
        .query_one("SELECT to_regclass($1)::oid", &[&outbox.table()])
        .await?;
    row.get::<_, Option<u32>>(0)
        .ok_or_else(|| OutboxError::Missing(outbox.table()))
}

/// The server's system identifier, folded as in replication mode's ids.
async fn system_tag(sql: &Client) -> Result<u32, tokio_postgres::Error> {
    let row = sql
        .query_one(
            "SELECT system_identifier::text FROM pg_control_system()",
            &[],
        )
        .await?;
    let id: String = row.get(0);
    Ok(ServerIdentity::system_tag(id.parse().unwrap_or_default()))
}

/// Takes the outbox lock for this session; `false` if another instance has it.
async fn try_lock(sql: &Client, outbox: &Outbox) -> Result<bool, tokio_postgres::Error> {
    let row = sql
        .query_one(
            "SELECT pg_try_advisory_lock(hashtextextended($1, 0))",
            &[&outbox.lock_name()],
        )
        .await?;
    Ok(row.get(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_handled_prefix_in_read_order_is_deleted() {
        let mut undeleted: VecDeque<(u64, i64)> = [(1, 40), (2, 12), (3, 41)].into();
        assert_eq!(take_handled(&mut undeleted, Lsn(2)), [40, 12]);
        assert_eq!(undeleted, [(3, 41)]);
        assert!(take_handled(&mut undeleted, Lsn(2)).is_empty());
    }

    #[test]
    fn an_outbox_row_reusing_a_sequence_number_after_a_restore_gets_another_id() {
        let before = outbox_id(0x6b8f_3a21, 16_384, 7, 1_764_612_345_123_456);
        assert_eq!(before, "outbox-6b8f3a21-16384-7-644e7d3ff5280");
        assert_ne!(
            before,
            outbox_id(0x6b8f_3a21, 16_384, 7, 1_764_612_999_000_000)
        );
    }

    #[tokio::test]
    async fn a_missing_outbox_is_an_error_that_says_what_to_do_not_a_panic() {
        let cluster =
            leadhook_testkit::cluster::Cluster::start(Default::default()).expect("a cluster");
        let url = format!("{}?sslmode=disable", cluster.url("postgres"));
        let sql = crate::database::Database::from_url(&url)
            .unwrap()
            .sql()
            .await
            .unwrap();
        let config = crate::config::Config::from_toml(&format!(
            "[database]\nurl = \"{url}\"\n[source]\nmode = \"notify\"\n"
        ))
        .unwrap();
        let error = epoch(&sql, &Outbox::new(&config)).await.unwrap_err();
        assert!(matches!(error, OutboxError::Missing(_)), "{error}");
        assert!(
            error.to_string().contains("leadhook setup --apply"),
            "{error}"
        );
    }

    #[test]
    fn the_same_key_orders_together() {
        assert_eq!(lead_key("[\"7\"]"), lead_key("[\"7\"]"));
        assert_ne!(lead_key("[\"7\"]"), lead_key("[\"8\"]"));
    }
}
