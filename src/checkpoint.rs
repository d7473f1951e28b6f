//! Which WAL position may be confirmed to the server.
//!
//! The rule that makes delivery at-least-once: a transaction's end LSN is
//! confirmed only when every change in it, and in every transaction before
//! it, has been handled by every webhook. Deliveries finish out of order;
//! this keeps the oldest unfinished transaction as the fence.

use std::collections::VecDeque;
use std::sync::Mutex;

use crate::lsn::Lsn;

/// Identifies one transaction of the current session, in commit order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TxSeq(u64);

/// Shared by the source (which opens and closes transactions) and delivery
/// (which reports handled changes). A plain mutex: each call is a few
/// integer operations, far below the cost of one HTTP request.
#[derive(Debug)]
pub(crate) struct Checkpoint {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Everything before this is handled.
    confirmed: Lsn,
    /// Transactions not yet confirmed, oldest first.
    open: VecDeque<Tx>,
    /// The sequence number of `open[0]`.
    front: u64,
}

#[derive(Debug)]
struct Tx {
    /// Known once the Commit message arrived.
    end: Option<Lsn>,
    /// Changes sent on but not yet handled by every webhook.
    outstanding: usize,
}

impl Checkpoint {
    pub(crate) fn new(start: Lsn) -> Self {
        Checkpoint {
            state: Mutex::new(State {
                confirmed: start,
                open: VecDeque::new(),
                front: 0,
            }),
        }
    }

    pub(crate) fn confirmed(&self) -> Lsn {
        self.lock().confirmed
    }

    /// A Begin arrived.
    pub(crate) fn begin(&self) -> TxSeq {
        let mut state = self.lock();
        state.open.push_back(Tx {
            end: None,
            outstanding: 0,
        });
        TxSeq(state.front + state.open.len() as u64 - 1)
    }

    /// A change of `tx` is about to be sent on for delivery.
    pub(crate) fn track(&self, tx: TxSeq) {
        if let Some(t) = self.lock().get(tx) {
            t.outstanding += 1;
        }
    }

    /// The Commit of `tx` arrived; its end LSN is what gets confirmed.
    pub(crate) fn commit(&self, tx: TxSeq, end: Lsn) {
        let mut state = self.lock();
        if let Some(t) = state.get(tx) {
            t.end = Some(end);
        }
        state.advance();
    }

    /// Every webhook has handled one change of `tx`.
    pub(crate) fn handled(&self, tx: TxSeq) {
        let mut state = self.lock();
        if let Some(t) = state.get(tx) {
            t.outstanding = t.outstanding.saturating_sub(1);
        }
        state.advance();
    }

    /// A keepalive reported the server's WAL end. With nothing in flight the
    /// WAL up to there holds no change for us, so confirming it lets the
    /// server recycle WAL that other tables wrote.
    pub(crate) fn idle_at(&self, wal_end: Lsn) {
        let mut state = self.lock();
        if state.open.is_empty() && wal_end > state.confirmed {
            state.confirmed = wal_end;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic elsewhere cannot leave State inconsistent (every method
        // mutates it in one step), so a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl State {
    fn get(&mut self, tx: TxSeq) -> Option<&mut Tx> {
        let index = tx.0.checked_sub(self.front)?;
        self.open.get_mut(usize::try_from(index).ok()?)
    }

    fn advance(&mut self) {
        while let Some(Tx {
            end: Some(end),
            outstanding: 0,
        }) = self.open.front()
        {
            self.confirmed = self.confirmed.max(*end);
            self.open.pop_front();
            self.front += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transaction_is_confirmed_only_after_its_commit_and_all_its_changes() {
        let cp = Checkpoint::new(Lsn(10));
        let tx = cp.begin();
        cp.track(tx);
        cp.track(tx);
        cp.handled(tx);
        cp.commit(tx, Lsn(100));
        assert_eq!(cp.confirmed(), Lsn(10), "one change still outstanding");
        cp.handled(tx);
        assert_eq!(cp.confirmed(), Lsn(100));
    }

    #[test]
    fn a_finished_later_transaction_waits_for_an_earlier_one() {
        let cp = Checkpoint::new(Lsn(0));
        let first = cp.begin();
        cp.track(first);
        cp.commit(first, Lsn(100));
        let second = cp.begin();
        cp.track(second);
        cp.commit(second, Lsn(200));
        cp.handled(second);
        assert_eq!(cp.confirmed(), Lsn(0));
        cp.handled(first);
        assert_eq!(cp.confirmed(), Lsn(200));
    }

    #[test]
    fn a_transaction_without_deliverable_changes_is_confirmed_at_commit() {
        let cp = Checkpoint::new(Lsn(0));
        let tx = cp.begin();
        cp.commit(tx, Lsn(50));
        assert_eq!(cp.confirmed(), Lsn(50));
    }

    #[test]
    fn keepalives_advance_the_position_only_when_nothing_is_in_flight() {
        let cp = Checkpoint::new(Lsn(0));
        let tx = cp.begin();
        cp.idle_at(Lsn(500));
        assert_eq!(cp.confirmed(), Lsn(0), "open transaction");
        cp.track(tx);
        cp.commit(tx, Lsn(600));
        cp.idle_at(Lsn(700));
        assert_eq!(cp.confirmed(), Lsn(0), "undelivered change");
        cp.handled(tx);
        cp.idle_at(Lsn(700));
        assert_eq!(cp.confirmed(), Lsn(700));
        cp.idle_at(Lsn(650));
        assert_eq!(cp.confirmed(), Lsn(700), "never moves backwards");
    }
}
