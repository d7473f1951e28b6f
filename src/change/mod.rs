//! What a source hands on to the lead stage, in commit order: row changes
//! of the leads table (replication mode) or leads the trigger captured
//! (notify mode). Both modes meet here.

pub(crate) mod backfill;
pub(crate) mod row;

use std::fmt::{self, Write as _};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::checkpoint::{Targets, TxSeq};
use crate::lsn::{Lsn, PG_EPOCH_OFFSET_MICROS};
use crate::memory::Reservation;

pub(crate) use row::{OldTuple, Relation, Tuple};

/// One message from the source to the lead stage.
#[derive(Debug)]
pub(crate) enum SourceMessage {
    /// The table's shape; sent before its first change and after each
    /// schema change, so the mapping can follow `ALTER TABLE`.
    Relation(Relation),
    Change(RowChange),
    /// Notify mode: a lead as the capture trigger wrote it.
    Captured(CapturedLead),
    /// A backfill chunk's low watermark: the lead stage notes from here
    /// which leads change (see `backfill`).
    Window(Arc<backfill::Chunk>),
    /// A lead deleted while a window is open: its key, as the old tuple.
    Deleted(OldTuple),
    /// The table truncated while a window is open.
    Truncated,
    /// A chunk's rows, at its high watermark.
    Backfill(backfill::BackfillBatch),
}

/// An outbox row: the trigger already mapped the columns to the payload's
/// fields (as text), so only the payload is left to write.
#[derive(Debug)]
pub(crate) struct CapturedLead {
    /// Its `webhook-id` (see `source::notify`).
    pub(crate) id: String,
    /// Its outbox sequence number: its place in capture order.
    pub(crate) seq: i64,
    /// The row's place in the outbox, for the checkpoint.
    pub(crate) tx: TxSeq,
    /// The webhooks that still need it.
    pub(crate) targets: Targets,
    /// Capture time: µs since 2000-01-01 UTC, like a commit time.
    pub(crate) commit_time: i64,
    /// Orders a lead's changes: derived from its captured primary key.
    pub(crate) key: u64,
    /// The fields as a JSON object, as the trigger wrote them.
    pub(crate) lead: String,
    /// The columns no field maps, as a JSON object of text (for filters).
    pub(crate) other_columns: Option<String>,
    /// Its bytes in the memory budget.
    pub(crate) memory: Reservation,
}

/// An INSERT or UPDATE of the leads table (the only changes that are events).
#[derive(Debug)]
pub(crate) struct RowChange {
    pub(crate) id: ChangeId,
    /// The transaction, for the checkpoint.
    pub(crate) tx: TxSeq,
    /// The webhooks that still need it.
    pub(crate) targets: Targets,
    /// Commit time as the server sent it: µs since 2000-01-01 UTC.
    pub(crate) commit_time: i64,
    /// The transaction's id, to tell whether a row read back is its version.
    pub(crate) xid: u32,
    pub(crate) new: Tuple,
    /// Present for updates under `REPLICA IDENTITY FULL` (or a changed key).
    pub(crate) old: Option<OldTuple>,
    /// Its bytes in the memory budget.
    pub(crate) memory: Reservation,
}

/// Identifies a change for good, as `webhook-id`. Everything in it comes
/// from the WAL, so a change streamed again (after a crash, a reconnect or a
/// failover to a standby that replayed it) gets the same id; and two
/// different changes never share one:
///
/// - `system`: a short form of the server's system identifier, so two
///   database clusters never share ids;
/// - `commit_lsn`: the commit's position, unique within one WAL history;
/// - `commit_time`: the commit's timestamp. After a failover to a standby
///   that was behind, or a restore, the same positions are reused by other
///   commits, made later: the timestamp tells them apart;
/// - `index`: the change's place among the table's changes in the
///   transaction (a multi-row INSERT decodes into several changes that
///   share one record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChangeId {
    pub(crate) system: u32,
    pub(crate) commit_lsn: Lsn,
    /// Microseconds since 2000-01-01 UTC.
    pub(crate) commit_time: i64,
    pub(crate) index: u32,
}

impl ChangeId {
    /// The id as text, its hexadecimal parts written digit by digit: one is
    /// made for every change, and `write!` with its padding and `Lsn`'s own
    /// `Display` was 3 % of a drain's CPU.
    pub(crate) fn text(&self) -> String {
        let mut text = String::with_capacity(56);
        push_hex(&mut text, u64::from(self.system), 8, HEX_LOWER);
        text.push('-');
        push_hex(&mut text, self.commit_lsn.0 >> 32, 1, HEX_UPPER);
        text.push('/');
        push_hex(&mut text, self.commit_lsn.0 & 0xFFFF_FFFF, 1, HEX_UPPER);
        text.push('-');
        // As `{:x}` shows an i64: its two's complement.
        push_hex(&mut text, self.commit_time as u64, 1, HEX_LOWER);
        text.push('-');
        let _ = write!(text, "{}", self.index);
        text
    }
}

const HEX_LOWER: &[u8; 16] = b"0123456789abcdef";
const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// Appends `value` in hexadecimal, zero-padded to `width` digits.
fn push_hex(text: &mut String, value: u64, width: usize, digits: &[u8; 16]) {
    let used = (64 - value.leading_zeros() as usize).div_ceil(4).max(width);
    for place in (0..used).rev() {
        let nibble = (value >> (place * 4)) & 0xF;
        text.push(char::from(digits[nibble as usize]));
    }
}

/// `webhook-id`: e.g. `6b8f3a21-0/16B3748-2e7c1f3a9b2c8-3` (system, commit
/// LSN, commit time in hexadecimal microseconds, index).
impl fmt::Display for ChangeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text())
    }
}

/// Orders a lead's changes: a hash of its primary-key values in text form,
/// as pgoutput streams them (`None`: a value the change did not carry).
/// Everything that hands a lead on (the stream, a backfill) derives it
/// here, so all changes of one lead share one delivery lane.
pub(crate) fn lead_key<'a>(key: impl IntoIterator<Item = Option<&'a [u8]>>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    for value in key {
        match value {
            Some(bytes) => bytes.hash(&mut hasher),
            None => 0u8.hash(&mut hasher),
        }
    }
    hasher.finish()
}

/// How long ago a transaction committed (zero if the clocks disagree).
pub(crate) fn commit_age(commit_time: i64, now: SystemTime) -> Duration {
    let now = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as i64;
    Duration::from_micros(u64::try_from(now - PG_EPOCH_OFFSET_MICROS - commit_time).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_ids_read_as_system_commit_lsn_time_and_position() {
        let id = ChangeId {
            system: 0x6b8f_3a21,
            commit_lsn: Lsn(0x16B3748),
            commit_time: 0x0002_e7c1_f3a9_b2c8,
            index: 3,
        };
        assert_eq!(id.to_string(), "6b8f3a21-0/16B3748-2e7c1f3a9b2c8-3");
    }

    #[test]
    fn change_id_text_matches_its_formatted_definition_at_the_edges() {
        let edges = [
            (0, 0, 0, 0),
            (u32::MAX, u64::MAX, i64::MAX, u32::MAX),
            (1, 0xFFFF_FFFF, -1, 9),
            (0x10, 0x1_0000_0000, i64::MIN, 10),
            (0x00ab_cdef, 0xA_0000_000F, 0x0123_4567_89ab, 1_000_000),
        ];
        for (system, lsn, commit_time, index) in edges {
            let id = ChangeId {
                system,
                commit_lsn: Lsn(lsn),
                commit_time,
                index,
            };
            let defined = format!(
                "{system:08x}-{:X}/{:X}-{commit_time:x}-{index}",
                lsn >> 32,
                lsn & 0xFFFF_FFFF
            );
            assert_eq!(id.text(), defined);
            assert_eq!(id.to_string(), defined);
        }
    }

    #[test]
    fn a_commit_at_a_reused_position_gets_another_id() {
        let before = ChangeId {
            system: 1,
            commit_lsn: Lsn(0x100),
            commit_time: 1_000,
            index: 0,
        };
        let after_restore = ChangeId {
            commit_time: 2_000,
            ..before
        };
        assert_ne!(before.to_string(), after_restore.to_string());
    }
}
