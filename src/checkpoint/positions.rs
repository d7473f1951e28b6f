//! Where each webhook stood when a session ended, and whether that still
//! holds for the next session's server and slot.

use std::collections::BTreeSet;

use crate::history::ServerIdentity;
use crate::lsn::Lsn;

/// Where each webhook stands: carried from one session to the next so a
/// restart from the slot's position does not send a webhook what it already
/// handled. Valid only on the server and WAL history they were confirmed
/// on: [`Positions::start_on`] discards them anywhere else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Positions {
    pub(super) webhooks: Vec<Lsn>,
    /// Per webhook: whether it may be set lagging next session. Not if it
    /// lagged and got nowhere: one transaction larger than it can take
    /// before lagging again would otherwise be restarted forever; it gets
    /// plain backpressure instead, and so makes progress.
    pub(super) may_lag: Vec<bool>,
    /// The server the positions were confirmed on; `None` before the first session.
    pub(super) origin: Option<Origin>,
    /// The last position confirmed to that server.
    pub(super) reported: Lsn,
    /// How far the stream had come: where a webhook added by a reload
    /// starts (it receives what commits after it was applied).
    pub(super) head: Lsn,
    /// Notify mode, per webhook: outbox rows (by `seq`) it handled while
    /// another webhook had not, so they are still in the outbox; the next
    /// session does not send them to it again.
    pub(crate) outbox_handled: Vec<BTreeSet<i64>>,
}

/// Which WAL history a position belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Origin {
    pub(crate) system_id: u64,
    pub(crate) timeline: u32,
}

/// The slot a session streams from, as the server has it now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SlotStart {
    /// The slot's `confirmed_flush_lsn`: where the server resumes.
    pub(crate) confirmed: Lsn,
    /// Created by this session: positions of an earlier slot mean nothing to it.
    pub(crate) created: bool,
}

/// Why positions kept in memory were not used for a new session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Discarded {
    #[error(
        "the server is another database system (system identifier {now}, was {was}): a different cluster answers at this address"
    )]
    OtherSystem { was: u64, now: u64 },
    #[error(
        "the server is on timeline {now}, was {was}: it was promoted (failover) or restored to a point in time"
    )]
    OtherTimeline { was: u32, now: u32 },
    #[error("the slot was created anew, so positions of the earlier one do not apply")]
    SlotCreated,
    #[error(
        "the server's WAL ends at {server}, before {reported} which was confirmed to it: it is a restored backup, or a standby that was behind"
    )]
    AheadOfServer { reported: Lsn, server: Lsn },
    #[error(
        "the slot resumes at {slot}, before {reported} which was confirmed to it: the server lost confirmations (crash, restart before PostgreSQL 17, or a restored backup)"
    )]
    SlotBehind { reported: Lsn, slot: Lsn },
}

impl Discarded {
    /// A different WAL history for certain, rather than lost confirmations
    /// (which every PostgreSQL before 17 may show after a restart).
    pub(crate) fn is_other_history(&self) -> bool {
        !matches!(self, Discarded::SlotBehind { .. })
    }
}

impl Positions {
    /// Everyone at `start`.
    pub(crate) fn at(start: Lsn, webhooks: usize) -> Positions {
        Positions {
            webhooks: vec![start; webhooks],
            may_lag: vec![true; webhooks],
            origin: None,
            reported: Lsn::ZERO,
            head: start,
            outbox_handled: vec![BTreeSet::new(); webhooks],
        }
    }

    /// The positions for webhooks `to` (by name), from those of `from`: a
    /// webhook in both keeps its place; a new one starts at the head of the
    /// stream, which is returned as its cut-over position.
    pub(crate) fn remap(&self, from: &[String], to: &[String]) -> (Positions, Lsn) {
        let mut next = Positions {
            webhooks: Vec::with_capacity(to.len()),
            may_lag: Vec::with_capacity(to.len()),
            outbox_handled: Vec::with_capacity(to.len()),
            ..self.clone()
        };
        for name in to {
            match from.iter().position(|n| n == name) {
                Some(i) => {
                    next.webhooks.push(self.webhooks[i]);
                    next.may_lag.push(self.may_lag[i]);
                    let handled = self.outbox_handled.get(i).cloned().unwrap_or_default();
                    next.outbox_handled.push(handled);
                }
                None => {
                    next.webhooks.push(self.head);
                    next.may_lag.push(true);
                    next.outbox_handled.push(BTreeSet::new());
                }
            }
        }
        (next, self.head)
    }

    /// The last position confirmed to a server, if a session streamed.
    pub(crate) fn confirmed_to_server(&self) -> Option<Lsn> {
        self.origin.map(|_| self.reported)
    }

    /// Where streaming must resume: the position of the furthest-behind.
    pub(crate) fn resume(&self) -> Lsn {
        self.webhooks.iter().copied().min().unwrap_or(Lsn::ZERO)
    }

    /// The positions for a session on `server` streaming from `slot`. The
    /// stream always starts where the slot is (a start position above it
    /// would make the server skip commits); positions kept from an earlier
    /// session only let each webhook skip what it handled, and only on the
    /// same WAL history. Elsewhere they are discarded, and why is returned.
    /// Nobody is placed before the slot: the stream cannot go back there,
    /// and confirming a position below it would move the slot backwards.
    pub(crate) fn start_on(
        &self,
        server: &ServerIdentity,
        slot: SlotStart,
    ) -> (Positions, Option<Discarded>) {
        let origin = Origin {
            system_id: server.system_id,
            timeline: server.timeline,
        };
        let discarded = self.origin.and_then(|was| {
            if was.system_id != origin.system_id {
                Some(Discarded::OtherSystem {
                    was: was.system_id,
                    now: origin.system_id,
                })
            } else if was.timeline != origin.timeline {
                Some(Discarded::OtherTimeline {
                    was: was.timeline,
                    now: origin.timeline,
                })
            } else if slot.created {
                Some(Discarded::SlotCreated)
            } else if self.reported > server.wal_position {
                Some(Discarded::AheadOfServer {
                    reported: self.reported,
                    server: server.wal_position,
                })
            } else if self.reported > slot.confirmed {
                Some(Discarded::SlotBehind {
                    reported: self.reported,
                    slot: slot.confirmed,
                })
            } else {
                None
            }
        });
        let mut next = match discarded {
            Some(_) => Positions::at(slot.confirmed, self.webhooks.len()),
            None => {
                let mut kept = self.clone();
                for position in &mut kept.webhooks {
                    *position = (*position).max(slot.confirmed);
                }
                kept.head = kept.head.max(slot.confirmed);
                kept
            }
        };
        next.origin = Some(origin);
        next.reported = slot.confirmed;
        (next, discarded)
    }
}
