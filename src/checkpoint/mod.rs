//! Which WAL position may be confirmed to the server.
//!
//! The rule that makes delivery at-least-once: a transaction's end LSN is
//! confirmed only when every change in it, and in every transaction before
//! it, has been handled (delivered, dead-lettered or durably spooled) by
//! every webhook.
//!
//! Progress is kept per webhook. That tells how much WAL one webhook alone
//! holds back (which makes it spool), and lets a restarted session skip for
//! each webhook what it handled (`Positions`). A webhook that may not spool
//! (`spool = false`) and falls behind can be set *lagging* instead: its
//! position freezes, it holds the confirmed LSN where it is, and the others
//! go on; once it has drained its queue the session is restarted from its
//! position.

use std::collections::VecDeque;
use std::sync::Mutex;

use crate::lsn::Lsn;

mod positions;
mod targets;
pub(crate) use positions::{Origin, Positions, SlotStart};
pub(crate) use targets::Targets;

/// Identifies one transaction of the current session, in commit order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TxSeq(u64);

/// Unconfirmed transactions a webhook may have before the source pauses.
const MAX_OPEN: usize = 100_000;
/// The same for the outbox: rows read but not yet deleted (notify mode
/// stops reading there).
pub(crate) const OUTBOX_MAX_OPEN: usize = 2_000;

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
    /// Unconfirmed transactions (outbox rows) at which reading pauses.
    max_open: usize,
    /// The slot's `safe_wal_size`, when the server reports one.
    safe_wal: Option<u64>,
    /// The furthest position the stream has reached.
    head: Lsn,
    /// Carried into the next session's [`Positions`].
    origin: Option<Origin>,
    /// The last position sent to the server.
    reported: Lsn,
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
    /// The end of the last transaction handled (keepalives move `confirmed`, not this).
    last_commit: Lsn,
    /// Its commit time (µs since 2000-01-01 UTC; 0 when not known): where
    /// a lost slot's gap begins in time.
    last_commit_time: i64,
    open: VecDeque<Tx>,
    /// The sequence number of `open[0]`.
    front: u64,
}

#[derive(Debug)]
struct Tx {
    /// Where its first record is: the server keeps the WAL from here while
    /// the transaction is not confirmed.
    first: Lsn,
    /// Known once the Commit message arrived.
    end: Option<Lsn>,
    /// Commit time, µs since 2000-01-01 UTC (0 when not known).
    commit_time: i64,
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
                max_open: if allow_lagging {
                    MAX_OPEN
                } else {
                    OUTBOX_MAX_OPEN
                },
                safe_wal: None,
                // Where the last session got to: a webhook a later reload
                // adds starts there, even before this session catches up.
                head: positions.head.max(positions.resume()),
                origin: positions.origin,
                reported: positions.reported,
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

    /// The end of the last lead transaction every webhook has handled:
    /// what is worth recording, since keepalives alone move `confirmed`.
    pub(crate) fn confirmed_commit(&self) -> Lsn {
        self.confirmed_commit_at().0
    }

    /// [`Self::confirmed_commit`] and that transaction's commit time (µs
    /// since 2000-01-01 UTC, 0 when not known).
    pub(crate) fn confirmed_commit_at(&self) -> (Lsn, i64) {
        let state = self.lock();
        let last = |p: &Progress| (p.last_commit, p.last_commit_time);
        state
            .webhooks
            .iter()
            .map(|t| last(&t.progress))
            .min()
            .unwrap_or_else(|| last(&state.stream))
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
            // Lagging (or held back from it) and got nowhere: not again.
            // A session that ended before it streamed changes nothing.
            may_lag: state
                .webhooks
                .iter()
                .map(|t| (!t.lagging && t.may_lag) || t.progress.confirmed > t.start)
                .collect(),
            origin: state.origin,
            reported: state.reported,
            head: state.head,
            outbox_handled: vec![Default::default(); state.webhooks.len()],
        }
    }

    /// `lsn` was sent to the server as confirmed.
    pub(crate) fn reported(&self, lsn: Lsn) {
        self.lock().reported = lsn;
    }

    /// A Begin arrived; `final_lsn` is the position of its commit record.
    /// (Where it starts is not known: see [`Self::begin_at`].)
    pub(crate) fn begin(&self, final_lsn: Lsn) -> TxSeq {
        self.begin_at(final_lsn, final_lsn)
    }

    /// A Begin arrived; the transaction's first record is at `first`, its
    /// commit record at `final_lsn`.
    pub(crate) fn begin_at(&self, first: Lsn, final_lsn: Lsn) -> TxSeq {
        let mut state = self.lock();
        state.head = state.head.max(first);
        let seq = state.stream.begin(first, true);
        for track in state.webhooks.iter_mut().filter(|t| !t.lagging) {
            // A transaction whose commit lies before the webhook's position
            // was handled by it already.
            let deliver = final_lsn >= track.progress.confirmed;
            track.progress.begin(first, deliver);
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

    /// [`Self::track`] for a change only `among` may get (a backfill run
    /// for some webhooks): the others are not held for it.
    pub(crate) fn track_among(&self, tx: TxSeq, among: &Targets) -> Targets {
        let mut state = self.lock();
        let mut targets = Targets::default();
        for (i, track) in state.webhooks.iter_mut().enumerate() {
            if track.lagging || !among.contains(i) {
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
        self.commit_at(tx, end, 0);
    }

    /// [`Self::commit`], with the commit time the stream reported.
    pub(crate) fn commit_at(&self, tx: TxSeq, end: Lsn, commit_time: i64) {
        let mut state = self.lock();
        state.head = state.head.max(end);
        state.stream.commit(tx, end, commit_time);
        for track in &mut state.webhooks {
            track.progress.commit(tx, end, commit_time);
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

    /// Whether `webhook` has handled the transaction that ends at `end`
    /// (notify mode: the outbox row read as `Lsn(index)`), though others
    /// may not have: what a later session must not send it again.
    pub(crate) fn has_handled(&self, webhook: usize, end: Lsn) -> bool {
        let state = self.lock();
        let Some(progress) = state.webhooks.get(webhook).map(|t| &t.progress) else {
            return false;
        };
        if end <= progress.confirmed {
            return true;
        }
        // Open transactions are in stream order, so their ends ascend.
        let found = progress
            .open
            .binary_search_by(|tx| tx.end.unwrap_or(Lsn(u64::MAX)).cmp(&end));
        found.is_ok_and(|at| progress.open[at].outstanding == 0)
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

    /// Whether `webhook` holds half the unconfirmed transactions (outbox
    /// rows) at which reading pauses: a change of it stuck retrying holds
    /// every later one, and soon everyone would wait for it.
    pub(crate) fn held_up_by(&self, webhook: usize) -> bool {
        let state = self.lock();
        state
            .webhooks
            .get(webhook)
            .is_some_and(|t| !t.lagging && t.progress.open.len() >= state.max_open / 2)
    }

    /// A keepalive reported the server's WAL end. For a consumer with
    /// nothing in flight the WAL up to there holds nothing for it, so
    /// confirming it lets the server recycle WAL that other tables wrote.
    pub(crate) fn idle_at(&self, wal_end: Lsn) {
        let mut state = self.lock();
        state.head = state.head.max(wal_end);
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

    /// WAL bytes that `webhook` alone holds back: from the oldest WAL it
    /// still needs to the oldest any other webhook needs (or, alone, to
    /// where the stream is). Zero for the outbox, whose positions are not WAL.
    pub(crate) fn held_back_alone(&self, webhook: usize) -> u64 {
        let state = self.lock();
        let Some(mine) = state.webhooks.get(webhook).filter(|_| state.allow_lagging) else {
            return 0;
        };
        let others = state
            .webhooks
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != webhook)
            .map(|(_, t)| t.progress.needs_from())
            .min()
            .unwrap_or(state.head)
            .min(state.head);
        others.0.saturating_sub(mine.progress.needs_from().0)
    }

    /// The slot's `safe_wal_size` as the server last reported it.
    pub(crate) fn set_safe_wal(&self, bytes: Option<u64>) {
        self.lock().safe_wal = bytes;
    }

    /// `max_retained_wal`, and never more than half the slot's safe WAL size.
    pub(crate) fn retained_wal_limit(&self, max_retained_wal: u64) -> u64 {
        match self.lock().safe_wal {
            Some(safe) => max_retained_wal.min(safe / 2),
            None => max_retained_wal,
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
            last_commit: confirmed,
            last_commit_time: 0,
            open: VecDeque::new(),
            front: 0,
        }
    }

    fn begin(&mut self, first: Lsn, deliver: bool) -> TxSeq {
        self.open.push_back(Tx {
            first,
            end: None,
            commit_time: 0,
            outstanding: 0,
            deliver,
        });
        TxSeq(self.front + self.open.len() as u64 - 1)
    }

    /// The oldest WAL this consumer still needs: its oldest open
    /// transaction's first record, or its confirmed position.
    fn needs_from(&self) -> Lsn {
        self.open
            .front()
            .map_or(self.confirmed, |tx| tx.first.min(self.confirmed))
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

    fn commit(&mut self, tx: TxSeq, end: Lsn, commit_time: i64) {
        if let Some(t) = self.get(tx) {
            t.end = Some(end);
            t.commit_time = commit_time;
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
        while let Some(&Tx {
            end: Some(end),
            outstanding: 0,
            commit_time,
            ..
        }) = self.open.front()
        {
            self.confirmed = self.confirmed.max(end);
            if end > self.last_commit {
                (self.last_commit, self.last_commit_time) = (end, commit_time);
            }
            self.open.pop_front();
            self.front += 1;
        }
    }
}

#[cfg(test)]
mod tests;
