//! What a backfill hands on: the chunk of rows read between two
//! watermarks, how the watermarks read in the stream, and the hand-off
//! between the backfill reader and the replication source.
//!
//! The reader registers a chunk before it writes the low watermark, fills
//! it before it writes the high one, and waits for its outcome. The source
//! acts only on watermarks of the chunk registered now: ones streamed
//! again after a restart (their rows died with the process) are ignored,
//! and their batch is read again, because its progress was never recorded.

use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::checkpoint::Targets;
use crate::lsn::Lsn;
use crate::memory::Reservation;

/// The prefix of leadhook's watermark messages (`pg_logical_emit_message`).
pub(crate) const PREFIX: &str = "leadhook.backfill";

/// Which end of a chunk's window a watermark marks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mark {
    Low,
    High,
}

/// A watermark as written into the WAL: `low|high <session> <chunk>`. The
/// session number tells this process's chunks from another's (a restarted
/// one, another shard's instance: messages reach every slot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Watermark {
    pub(crate) mark: Mark,
    pub(crate) session: u64,
    pub(crate) chunk: u64,
}

impl Watermark {
    pub(crate) fn encode(&self) -> String {
        let mark = match self.mark {
            Mark::Low => "low",
            Mark::High => "high",
        };
        format!("{mark} {:x} {}", self.session, self.chunk)
    }

    /// `None` for anything that is not a watermark of this format.
    pub(crate) fn parse(content: &[u8]) -> Option<Watermark> {
        let text = std::str::from_utf8(content).ok()?;
        let mut parts = text.split(' ');
        let mark = match parts.next()? {
            "low" => Mark::Low,
            "high" => Mark::High,
            _ => return None,
        };
        let session = u64::from_str_radix(parts.next()?, 16).ok()?;
        let chunk = parts.next()?.parse().ok()?;
        parts.next().is_none().then_some(Watermark {
            mark,
            session,
            chunk,
        })
    }
}

/// One lead as a backfill read it: mapped to the payload's fields by the
/// same SQL the notify trigger uses.
#[derive(Debug)]
pub(crate) struct BackfillRow {
    /// Its `webhook-id`: the same for this lead in every retry of the run.
    pub(crate) id: String,
    /// Orders it with the lead's live changes (see `change::lead_key`).
    pub(crate) key: u64,
    /// The fields as a JSON object of text.
    pub(crate) lead: String,
    /// The columns no field maps, when some webhook filters on them.
    pub(crate) other_columns: Option<String>,
    pub(crate) memory: Reservation,
}

/// What became of a chunk once the stream reached its high watermark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Handed on in the transaction that commits at `end`: handled once
    /// the confirmed position reaches it.
    Merged { end: Lsn },
    /// Its low watermark was not seen (cannot happen within one session;
    /// if it did, the rows could not be ordered): read the batch again.
    Unsafe,
}

/// Two stages report on a chunk: the lead stage whether it could merge
/// the rows, the source (which is ahead of it) where their transaction ends.
#[derive(Debug, Clone, Copy, Default)]
struct Reports {
    merged: Option<bool>,
    end: Option<Lsn>,
}

impl Reports {
    fn outcome(&self) -> Option<Outcome> {
        match (self.merged, self.end) {
            (Some(false), _) => Some(Outcome::Unsafe),
            (Some(true), Some(end)) => Some(Outcome::Merged { end }),
            _ => None,
        }
    }
}

/// A chunk's rows as the source hands them on at the high watermark,
/// each with the webhooks that get it; they are placed at the
/// transaction's commit, like its changes.
#[derive(Debug)]
pub(crate) struct BackfillBatch {
    pub(crate) chunk: Arc<Chunk>,
    pub(crate) rows: Vec<(BackfillRow, Targets)>,
    pub(crate) tx: crate::checkpoint::TxSeq,
    pub(crate) commit_lsn: Lsn,
    pub(crate) commit_time: i64,
}

/// One batch of a run, between its watermarks.
#[derive(Debug)]
pub(crate) struct Chunk {
    pub(crate) id: Watermark,
    /// The webhooks the run is for, by index in this session.
    pub(crate) targets: Targets,
    rows: Mutex<Option<Vec<BackfillRow>>>,
    reports: watch::Sender<Reports>,
}

impl Chunk {
    pub(crate) fn new(session: u64, chunk: u64, targets: Targets) -> Arc<Chunk> {
        Arc::new(Chunk {
            id: Watermark {
                mark: Mark::Low,
                session,
                chunk,
            },
            targets,
            rows: Mutex::new(None),
            reports: watch::Sender::new(Reports::default()),
        })
    }

    pub(crate) fn watermark(&self, mark: Mark) -> Watermark {
        Watermark { mark, ..self.id }
    }

    /// The reader: the rows, before it writes the high watermark.
    pub(crate) fn fill(&self, rows: Vec<BackfillRow>) {
        *lock(&self.rows) = Some(rows);
    }

    /// The source, at the high watermark: the rows (once).
    pub(crate) fn take_rows(&self) -> Vec<BackfillRow> {
        lock(&self.rows).take().unwrap_or_default()
    }

    /// The lead stage: whether the rows could be merged with the stream.
    pub(crate) fn set_merged(&self, merged: bool) {
        self.reports.send_modify(|r| r.merged = Some(merged));
    }

    /// The source: the high watermark's transaction commits at `end`.
    pub(crate) fn set_end(&self, end: Lsn) {
        self.reports.send_modify(|r| r.end = Some(end));
    }

    /// The reader: once both stages have reported.
    pub(crate) async fn outcome(&self) -> Outcome {
        let mut reports = self.reports.subscribe();
        match reports.wait_for(|r| r.outcome().is_some()).await {
            Ok(r) => r.outcome().unwrap_or(Outcome::Unsafe),
            Err(_) => Outcome::Unsafe,
        }
    }
}

/// The chunk in flight, if any: one at a time per session.
#[derive(Debug, Default)]
pub(crate) struct Handoff {
    current: Mutex<Option<Arc<Chunk>>>,
}

impl Handoff {
    /// The reader, before writing the chunk's low watermark.
    pub(crate) fn expect(&self, chunk: Arc<Chunk>) {
        *lock(&self.current) = Some(chunk);
    }

    /// The reader, when the chunk is done with (merged, empty or failed).
    pub(crate) fn clear(&self) {
        *lock(&self.current) = None;
    }

    /// The source: the registered chunk a watermark belongs to.
    pub(crate) fn find(&self, watermark: &Watermark) -> Option<Arc<Chunk>> {
        lock(&self.current)
            .as_ref()
            .filter(|c| c.id.session == watermark.session && c.id.chunk == watermark.chunk)
            .cloned()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Each use is one assignment: a panic elsewhere leaves nothing half done.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watermark_reads_back_as_written() {
        let mark = Watermark {
            mark: Mark::High,
            session: 0xdead_beef,
            chunk: 42,
        };
        assert_eq!(mark.encode(), "high deadbeef 42");
        assert_eq!(Watermark::parse(mark.encode().as_bytes()), Some(mark));
    }

    #[test]
    fn other_messages_are_not_watermarks() {
        for content in [
            "",
            "low",
            "low 1",
            "mid 1 2",
            "low x 2",
            "low 1 2 3",
            "high 1 -2",
        ] {
            assert_eq!(Watermark::parse(content.as_bytes()), None, "{content:?}");
        }
    }

    #[test]
    fn only_the_registered_chunk_is_found() {
        let handoff = Handoff::default();
        let chunk = Chunk::new(7, 3, Targets::default());
        handoff.expect(chunk.clone());
        assert!(handoff.find(&chunk.watermark(Mark::High)).is_some());
        let replayed = Watermark {
            session: 6,
            ..chunk.watermark(Mark::High)
        };
        assert!(handoff.find(&replayed).is_none());
        handoff.clear();
        assert!(handoff.find(&chunk.watermark(Mark::Low)).is_none());
    }
}
