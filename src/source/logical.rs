//! What each decoded pgoutput message does to the source: transactions
//! opened and committed at the checkpoint, the table's changes numbered,
//! counted and made pending for the next stage, a backfill's watermarks.

use super::pgoutput::{self, LogicalMessage};
use super::{OpenTx, Source};
use crate::change::backfill::{BackfillBatch, Mark, PREFIX, Watermark};
use crate::change::{ChangeId, RowChange, SourceMessage};
use crate::checkpoint::TxSeq;
use crate::lsn::Lsn;

impl Source {
    /// `at`: where the message's WAL record is (for a Begin, the
    /// transaction's first record); `size`: its bytes.
    pub(super) fn handle(&mut self, at: Lsn, size: usize, message: LogicalMessage) {
        match message {
            LogicalMessage::Begin(begin) => {
                tracing::trace!(final_lsn = %begin.final_lsn, xid = begin.xid, "begin");
                let seq = self.checkpoint.begin_at(at, begin.final_lsn);
                self.tx = Some(OpenTx {
                    seq,
                    commit_lsn: begin.final_lsn,
                    commit_time: begin.commit_time,
                    xid: begin.xid,
                    next_index: 0,
                    high: None,
                });
            }
            LogicalMessage::Commit(commit) => {
                tracing::trace!(end_lsn = %commit.end_lsn, "commit");
                if let Some(tx) = self.tx.take() {
                    self.checkpoint
                        .commit_at(tx.seq, commit.end_lsn, tx.commit_time);
                    if let Some(chunk) = tx.high {
                        chunk.set_end(commit.end_lsn);
                    }
                }
            }
            LogicalMessage::Relation(relation) => {
                tracing::trace!(id = relation.id, namespace = %relation.namespace, name = %relation.name, "relation");
                if relation.namespace == self.table.schema && relation.name == self.table.name {
                    self.relation_id = Some(relation.id);
                    self.pending = Some(SourceMessage::Relation(relation));
                }
            }
            LogicalMessage::Insert(insert) => {
                self.change(size, insert.relation_id, "insert", insert.new, None)
            }
            LogicalMessage::Update(update) => {
                self.change(size, update.relation_id, "update", update.new, update.old)
            }
            LogicalMessage::Delete(delete) => {
                let ours = self.count_change(delete.relation_id, "delete").is_some();
                if ours && self.in_window {
                    self.pending = Some(SourceMessage::Deleted(delete.old));
                }
            }
            LogicalMessage::Truncate(truncate) => {
                if truncate
                    .relation_ids
                    .iter()
                    .any(|id| Some(*id) == self.relation_id)
                {
                    metrics::counter!("leadhook_changes_total", "op" => "truncate").increment(1);
                    self.next_index();
                    if self.in_window {
                        self.pending = Some(SourceMessage::Truncated);
                    }
                }
            }
            LogicalMessage::Message(message) if message.prefix == PREFIX => {
                if let Some(watermark) = Watermark::parse(&message.content) {
                    self.watermark(watermark);
                }
            }
            LogicalMessage::Origin(_) | LogicalMessage::Type(_) | LogicalMessage::Message(_) => {}
        }
    }

    /// A backfill watermark: of the chunk in flight, or one streamed again
    /// (after a restart) or another instance's, which are ignored. At the
    /// high watermark the chunk's rows are handed on in its transaction.
    fn watermark(&mut self, watermark: Watermark) {
        let Some(chunk) = self.backfill.find(&watermark) else {
            return;
        };
        let Some(tx) = self.tx.as_mut() else {
            return; // watermarks are transactional: always in a transaction
        };
        match watermark.mark {
            Mark::Low => {
                self.in_window = true;
                self.pending = Some(SourceMessage::Window(chunk));
            }
            Mark::High => {
                self.in_window = false;
                let rows = chunk
                    .take_rows()
                    .into_iter()
                    .map(|row| (row, self.checkpoint.track_among(tx.seq, &chunk.targets)))
                    .collect();
                tx.high = Some(chunk.clone());
                self.pending = Some(SourceMessage::Backfill(BackfillBatch {
                    chunk,
                    rows,
                    tx: tx.seq,
                    commit_lsn: tx.commit_lsn,
                    commit_time: tx.commit_time,
                }));
            }
        }
    }

    /// A change of the table becomes pending, with `size` bytes reserved
    /// (or to be reserved once the budget has room).
    fn change(
        &mut self,
        size: usize,
        relation_id: u32,
        op: &'static str,
        new: pgoutput::Tuple,
        old: Option<pgoutput::OldTuple>,
    ) {
        let Some((tx, id)) = self.count_change(relation_id, op) else {
            return;
        };
        let (commit_time, xid) = self.tx.as_ref().map_or((0, 0), |t| (t.commit_time, t.xid));
        let targets = self.checkpoint.track(tx);
        if targets.is_empty() {
            return; // every webhook handled this transaction in an earlier session
        }
        let memory = self.budget.try_reserve(size).unwrap_or_else(|| {
            self.unreserved = Some(size);
            self.budget.none()
        });
        self.pending = Some(SourceMessage::Change(RowChange {
            id,
            tx,
            targets,
            commit_time,
            xid,
            new,
            old,
            memory,
        }));
    }

    /// Counts a change and gives it its id; `None` if it is not ours.
    /// Only the table's own changes are numbered, so a change keeps its id
    /// even if the publication gains or loses other tables in between.
    fn count_change(&mut self, relation_id: u32, op: &'static str) -> Option<(TxSeq, ChangeId)> {
        if Some(relation_id) != self.relation_id {
            return None;
        }
        let index = self.next_index();
        self.changes.of(op).increment(1);
        let tx = self.tx.as_ref()?;
        Some((
            tx.seq,
            ChangeId {
                system: self.system,
                commit_lsn: tx.commit_lsn,
                commit_time: tx.commit_time,
                index: index?,
            },
        ))
    }

    fn next_index(&mut self) -> Option<u32> {
        let tx = self.tx.as_mut()?;
        let index = tx.next_index;
        tx.next_index += 1;
        Some(index)
    }
}
