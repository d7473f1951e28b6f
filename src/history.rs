//! Which WAL history a position belongs to. A restored backup or a promoted
//! standby reuses WAL positions of another history; the checkpoint and the
//! slot record compare identities before trusting a remembered position.

use crate::lsn::Lsn;

/// The server's answer to `IDENTIFY_SYSTEM`: which WAL history a position
/// read from it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ServerIdentity {
    /// Set by initdb and kept by physical standbys and restored backups:
    /// tells one database cluster from another.
    pub(crate) system_id: u64,
    /// Starts at 1 and grows with each promotion or point-in-time recovery.
    pub(crate) timeline: u32,
    /// The server's current WAL flush position.
    pub(crate) wal_position: Lsn,
}

impl ServerIdentity {
    /// A short form of the system identifier for `webhook-id`s: the two
    /// halves folded into 32 bits, written as 8 hex digits.
    pub(crate) fn system_tag(system_id: u64) -> u32 {
        ((system_id >> 32) ^ (system_id & 0xFFFF_FFFF)) as u32
    }
}
