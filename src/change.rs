//! What the source hands on: row changes of the leads table, in commit order.

use std::fmt;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::checkpoint::{Targets, TxSeq};
use crate::lsn::Lsn;
use crate::source::pgoutput::{OldTuple, Relation, Tuple};

/// One message from the source to the lead stage.
#[derive(Debug)]
pub(crate) enum SourceMessage {
    /// The table's shape; sent before its first change and after each
    /// schema change, so the mapping can follow `ALTER TABLE`.
    Relation(Relation),
    Change(RowChange),
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
    pub(crate) new: Tuple,
    /// Present for updates under `REPLICA IDENTITY FULL` (or a changed key).
    pub(crate) old: Option<OldTuple>,
}

/// Identifies a change for good: the commit's LSN and the change's place in
/// that transaction. Both come from the WAL, so a change that is streamed
/// again after a crash or reconnect gets the same id (and `webhook-id`).
/// The change's own LSN is not enough: a multi-row insert (COPY) decodes into
/// several changes that share one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChangeId {
    pub(crate) commit_lsn: Lsn,
    pub(crate) index: u32,
}

/// `webhook-id`: e.g. `0/16B3748-3`.
impl fmt::Display for ChangeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.commit_lsn, self.index)
    }
}

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
pub(crate) const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

/// How long ago a transaction committed (zero if the clocks disagree).
pub(crate) fn commit_age(commit_time: i64) -> Duration {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as i64;
    Duration::from_micros(u64::try_from(now - PG_EPOCH_OFFSET_MICROS - commit_time).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_ids_read_as_commit_lsn_and_position() {
        let id = ChangeId {
            commit_lsn: Lsn(0x16B3748),
            index: 3,
        };
        assert_eq!(id.to_string(), "0/16B3748-3");
    }
}
