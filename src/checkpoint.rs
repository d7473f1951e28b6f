//! Which WAL position may be confirmed to the server.
//!
//! The rule that makes delivery at-least-once: a transaction's end LSN is
//! confirmed only when every change in it, and in every transaction before
//! it, has been handled (delivered or dead-lettered) by every webhook.
//!
//! Progress is kept per webhook, so a webhook that falls behind (its queue
//! stays full) can be set *lagging*: its position freezes, it holds the
//! confirmed LSN where it is, and the others go on. Its backlog stays in the
//! server's WAL; once it has drained its queue the session is restarted from
//! its position, and the other webhooks skip the transactions they already
//! handled (`Positions`).

use std::collections::VecDeque;
use std::sync::Mutex;

use crate::lsn::Lsn;

/// Identifies one transaction of the current session, in commit order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TxSeq(u64);

/// Unconfirmed transactions a webhook may have before the source pauses.
const MAX_OPEN: usize = 100_000;

/// The webhooks (by index) a change goes to. A bit set: at most 64 webhooks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Targets(u64);

impl Targets {
    pub(crate) const MAX: usize = 64;

    pub(crate) fn contains(self, webhook: usize) -> bool {
        webhook < Self::MAX && self.0 & (1 << webhook) != 0
    }

    fn insert(&mut self, webhook: usize) {
        self.0 |= 1 << webhook;
    }
}

/// Where each webhook, and the stream itself, stands: carried from one
/// session to the next so a restart from an earlier position does not send
/// a webhook what it already handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Positions {
    webhooks: Vec<Lsn>,
    /// Per webhook: whether it may be set lagging next session. Not if it
    /// lagged and got nowhere: one transaction larger than it can take
    /// before lagging again would otherwise be restarted forever; it gets
    /// plain backpressure instead, and so makes progress.
    may_lag: Vec<bool>,
}

impl Positions {
    /// Everyone at `start` (`0/0`: wherever the slot is).
    pub(crate) fn at(start: Lsn, webhooks: usize) -> Positions {
        Positions {
            webhooks: vec![start; webhooks],
            may_lag: vec![true; webhooks],
        }
    }

    /// Where streaming must resume: the position of the furthest-behind.
    pub(crate) fn resume(&self) -> Lsn {
        self.webhooks.iter().copied().min().unwrap_or(Lsn::ZERO)
    }
}

/// Shared by the source (which opens and closes transactions), the lead
/// stage (which may set a webhook lagging) and delivery (which reports
/// handled changes). A plain mutex: each call is a few integer operations,
/// far below the cost of one HTTP request.
#[derive(Debug)]
pub(crate) struct Checkpoint {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Transactions as the stream saw them: what is confirmed when no
    /// webhook holds anything (and when there are no webhooks).
    stream: Progress,
    webhooks: Vec<Track>,
    allow_lagging: bool,
}

#[derive(Debug)]
struct Track {
    progress: Progress,
    /// Falling behind: given no new transactions this session.
    lagging: bool,
    /// Where this session started it, to tell whether lagging got it anywhere.
    start: Lsn,
    may_lag: bool,
}

/// One consumer's unconfirmed transactions, oldest first.
#[derive(Debug)]
struct Progress {
    /// Everything before this is handled.
    confirmed: Lsn,
    open: VecDeque<Tx>,
    /// The sequence number of `open[0]`.
    front: u64,
}

#[derive(Debug)]
struct Tx {
    /// Known once the Commit message arrived.
    end: Option<Lsn>,
    /// Changes sent on but not yet handled.
    outstanding: usize,
    /// False when this consumer handled the transaction in an earlier session.
    deliver: bool,
}

impl Checkpoint {
    pub(crate) fn new(positions: &Positions) -> Self {
        Self::build(positions, true)
    }

    /// For the outbox of notify mode: positions there are read indexes of
    /// one session, so a webhook cannot be skipped ahead in a later one and
    /// lagging is off (a full queue is plain backpressure).
    pub(crate) fn for_outbox(webhooks: usize) -> Self {
        Self::build(&Positions::at(Lsn::ZERO, webhooks), false)
    }

    fn build(positions: &Positions, allow_lagging: bool) -> Self {
        let webhooks = positions
            .webhooks
            .iter()
            .zip(&positions.may_lag)
            .map(|(&confirmed, &may_lag)| Track {
                progress: Progress::new(confirmed),
                lagging: false,
                start: confirmed,
                may_lag,
            })
            .collect();
        let stream = Progress::new(positions.resume());
        Checkpoint {
            state: Mutex::new(State {
                stream,
                webhooks,
                allow_lagging,
            }),
        }
    }

    /// The position to confirm to the server: no webhook needs anything before it.
    pub(crate) fn confirmed(&self) -> Lsn {
        let state = self.lock();
        state
            .webhooks
            .iter()
            .map(|t| t.progress.confirmed)
            .min()
            .unwrap_or(state.stream.confirmed)
    }

    /// Each webhook's position, for the next session.
    pub(crate) fn positions(&self) -> Positions {
        let state = self.lock();
        Positions {
            webhooks: state
                .webhooks
                .iter()
                .map(|t| t.progress.confirmed)
                .collect(),
            may_lag: state
                .webhooks
                .iter()
                .map(|t| !t.lagging || t.progress.confirmed > t.start)
                .collect(),
        }
    }

    /// A Begin arrived; `final_lsn` is the position of its commit record.
    pub(crate) fn begin(&self, final_lsn: Lsn) -> TxSeq {
        let mut state = self.lock();
        let seq = state.stream.begin(true);
        for track in state.webhooks.iter_mut().filter(|t| !t.lagging) {
            // A transaction whose commit lies before the webhook's position
            // was handled by it already.
            let deliver = final_lsn >= track.progress.confirmed;
            track.progress.begin(deliver);
        }
        seq
    }

    /// A change of `tx` is about to be sent on: returns which webhooks get it.
    pub(crate) fn track(&self, tx: TxSeq) -> Targets {
        let mut state = self.lock();
        let mut targets = Targets::default();
        for (i, track) in state.webhooks.iter_mut().enumerate() {
            if track.lagging {
                continue;
            }
            if let Some(t) = track.progress.get(tx).filter(|t| t.deliver) {
                t.outstanding += 1;
                targets.insert(i);
            }
        }
        targets
    }

    /// The Commit of `tx` arrived; its end LSN is what gets confirmed.
    /// (A lagging webhook only tracks transactions it was given before it
    /// fell behind; for later ones `get` finds nothing.)
    pub(crate) fn commit(&self, tx: TxSeq, end: Lsn) {
        let mut state = self.lock();
        state.stream.commit(tx, end);
        for track in &mut state.webhooks {
            track.progress.commit(tx, end);
        }
    }

    /// `webhook` has handled one change of `tx`. Counted for a lagging
    /// webhook too, so its position still moves over what it was given.
    pub(crate) fn handled(&self, webhook: usize, tx: TxSeq) {
        let mut state = self.lock();
        if let Some(track) = state.webhooks.get_mut(webhook) {
            track.progress.handled(tx);
        }
    }

    /// Whether a webhook keeping up has so many unconfirmed transactions
    /// (one change stuck retrying holds all later ones) that the source
    /// should stop reading until some are confirmed: bounds memory.
    pub(crate) fn backlogged(&self) -> bool {
        self.lock()
            .webhooks
            .iter()
            .any(|t| !t.lagging && t.progress.open.len() >= MAX_OPEN)
    }

    /// A keepalive reported the server's WAL end. For a consumer with
    /// nothing in flight the WAL up to there holds nothing for it, so
    /// confirming it lets the server recycle WAL that other tables wrote.
    pub(crate) fn idle_at(&self, wal_end: Lsn) {
        let mut state = self.lock();
        state.stream.idle_at(wal_end);
        for track in state.webhooks.iter_mut().filter(|t| !t.lagging) {
            track.progress.idle_at(wal_end);
        }
    }

    /// Stops giving `webhook` changes this session, from transaction `from`
    /// on (the first it could not be given a change of). Its position can
    /// still move over the transactions before, as it handles them.
    /// Refused (false) for the last webhook still keeping up: lagging only
    /// helps when someone else can go on; alone, it waits (backpressure).
    pub(crate) fn set_lagging(&self, webhook: usize, from: TxSeq) -> bool {
        let mut state = self.lock();
        let keeping_up = state.webhooks.iter().filter(|t| !t.lagging).count();
        if !state.allow_lagging {
            return false;
        }
        match state.webhooks.get_mut(webhook) {
            Some(track) if !track.lagging && track.may_lag && keeping_up > 1 => {
                track.lagging = true;
                track.progress.forget_from(from);
                true
            }
            _ => false,
        }
    }

    pub(crate) fn is_lagging(&self, webhook: usize) -> bool {
        self.lock().webhooks.get(webhook).is_some_and(|t| t.lagging)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every method mutates State in one step, so a panic elsewhere
        // cannot leave it inconsistent: a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Progress {
    fn new(confirmed: Lsn) -> Self {
        Progress {
            confirmed,
            open: VecDeque::new(),
            front: 0,
        }
    }

    fn begin(&mut self, deliver: bool) -> TxSeq {
        self.open.push_back(Tx {
            end: None,
            outstanding: 0,
            deliver,
        });
        TxSeq(self.front + self.open.len() as u64 - 1)
    }

    fn get(&mut self, tx: TxSeq) -> Option<&mut Tx> {
        let index = tx.0.checked_sub(self.front)?;
        self.open.get_mut(usize::try_from(index).ok()?)
    }

    /// Drops `from` and later transactions: they will not be completed.
    fn forget_from(&mut self, from: TxSeq) {
        let keep = from.0.saturating_sub(self.front);
        self.open
            .truncate(usize::try_from(keep).unwrap_or(usize::MAX));
    }

    fn commit(&mut self, tx: TxSeq, end: Lsn) {
        if let Some(t) = self.get(tx) {
            t.end = Some(end);
        }
        self.advance();
    }

    fn handled(&mut self, tx: TxSeq) {
        if let Some(t) = self.get(tx) {
            t.outstanding = t.outstanding.saturating_sub(1);
        }
        self.advance();
    }

    fn idle_at(&mut self, wal_end: Lsn) {
        if self.open.is_empty() && wal_end > self.confirmed {
            self.confirmed = wal_end;
        }
    }

    fn advance(&mut self) {
        while let Some(Tx {
            end: Some(end),
            outstanding: 0,
            ..
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

    fn checkpoint(webhooks: usize) -> Checkpoint {
        Checkpoint::new(&Positions::at(Lsn(10), webhooks))
    }

    #[test]
    fn a_transaction_is_confirmed_only_after_its_commit_and_all_its_changes() {
        let cp = checkpoint(1);
        let tx = cp.begin(Lsn(90));
        assert_eq!(cp.track(tx), Targets(1));
        cp.track(tx);
        cp.handled(0, tx);
        cp.commit(tx, Lsn(100));
        assert_eq!(cp.confirmed(), Lsn(10), "one change still outstanding");
        cp.handled(0, tx);
        assert_eq!(cp.confirmed(), Lsn(100));
    }

    #[test]
    fn every_webhook_must_handle_a_change_before_it_is_confirmed() {
        let cp = checkpoint(2);
        let tx = cp.begin(Lsn(90));
        assert_eq!(cp.track(tx), Targets(0b11));
        cp.commit(tx, Lsn(100));
        cp.handled(1, tx);
        assert_eq!(cp.confirmed(), Lsn(10));
        cp.handled(0, tx);
        assert_eq!(cp.confirmed(), Lsn(100));
    }

    #[test]
    fn a_finished_later_transaction_waits_for_an_earlier_one() {
        let cp = checkpoint(1);
        let first = cp.begin(Lsn(90));
        cp.track(first);
        cp.commit(first, Lsn(100));
        let second = cp.begin(Lsn(190));
        cp.track(second);
        cp.commit(second, Lsn(200));
        cp.handled(0, second);
        assert_eq!(cp.confirmed(), Lsn(10));
        cp.handled(0, first);
        assert_eq!(cp.confirmed(), Lsn(200));
    }

    #[test]
    fn without_webhooks_the_stream_position_is_confirmed() {
        let cp = checkpoint(0);
        let tx = cp.begin(Lsn(40));
        assert_eq!(cp.track(tx), Targets::default());
        cp.commit(tx, Lsn(50));
        assert_eq!(cp.confirmed(), Lsn(50));
    }

    #[test]
    fn keepalives_advance_the_position_only_when_nothing_is_in_flight() {
        let cp = checkpoint(1);
        let tx = cp.begin(Lsn(590));
        cp.idle_at(Lsn(500));
        assert_eq!(cp.confirmed(), Lsn(10), "open transaction");
        cp.track(tx);
        cp.commit(tx, Lsn(600));
        cp.idle_at(Lsn(700));
        assert_eq!(cp.confirmed(), Lsn(10), "undelivered change");
        cp.handled(0, tx);
        cp.idle_at(Lsn(700));
        assert_eq!(cp.confirmed(), Lsn(700));
        cp.idle_at(Lsn(650));
        assert_eq!(cp.confirmed(), Lsn(700), "never moves backwards");
    }

    #[test]
    fn a_lagging_webhook_holds_the_position_while_the_others_go_on() {
        let cp = checkpoint(2);
        let first = cp.begin(Lsn(90));
        cp.track(first);
        cp.commit(first, Lsn(100));
        cp.handled(1, first);
        let second = cp.begin(Lsn(190));
        cp.track(second);
        // Webhook 0 took `first` but could not be given `second`.
        assert!(cp.set_lagging(0, second));
        assert!(
            !cp.set_lagging(1, second),
            "the last webhook keeping up waits instead"
        );
        cp.commit(second, Lsn(200));
        cp.handled(1, second);
        let third = cp.begin(Lsn(290));
        assert_eq!(
            cp.track(third),
            Targets(0b10),
            "the lagging webhook gets nothing more"
        );
        cp.commit(third, Lsn(300));
        cp.handled(1, third);
        cp.idle_at(Lsn(400));
        assert_eq!(cp.confirmed(), Lsn(10), "held by the lagging webhook");
        cp.handled(0, first);
        cp.handled(0, second); // it never got this one: no effect
        assert_eq!(
            cp.positions(),
            Positions {
                webhooks: vec![Lsn(100), Lsn(400)],
                may_lag: vec![true, true]
            },
            "it still moves over what it was given"
        );
    }

    #[test]
    fn a_webhook_that_lagged_without_progress_is_not_set_lagging_again() {
        let cp = checkpoint(2);
        let tx = cp.begin(Lsn(90));
        cp.track(tx);
        assert!(cp.set_lagging(0, tx));
        let next = Checkpoint::new(&cp.positions());
        let tx = next.begin(Lsn(90));
        next.track(tx);
        assert!(
            !next.set_lagging(0, tx),
            "it waits instead, and so gets through"
        );
        assert!(next.set_lagging(1, tx), "the other webhook still may");
    }

    #[test]
    fn the_outbox_never_sets_a_webhook_lagging() {
        let cp = Checkpoint::for_outbox(2);
        let tx = cp.begin(Lsn(1));
        assert!(!cp.set_lagging(0, tx));
    }

    #[test]
    fn a_new_session_skips_what_each_webhook_already_handled() {
        let positions = Positions {
            webhooks: vec![Lsn(10), Lsn(300)],
            may_lag: vec![true, true],
        };
        assert_eq!(positions.resume(), Lsn(10));
        let cp = Checkpoint::new(&positions);
        let old = cp.begin(Lsn(190));
        assert_eq!(cp.track(old), Targets(0b01), "webhook 1 handled it before");
        cp.commit(old, Lsn(200));
        cp.handled(0, old);
        let new = cp.begin(Lsn(390));
        assert_eq!(cp.track(new), Targets(0b11));
    }
}
