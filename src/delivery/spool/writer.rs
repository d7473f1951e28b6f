//! The one task of a session that writes the spool: it takes what the
//! spooling webhooks' workers hand it, writes it in batched transactions,
//! and only then reports the changes handled, so the confirmed position
//! never passes a change that is not durably somewhere.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;

use super::Entry;
use super::store::{SpoolError, SpoolStore};
use crate::checkpoint::Checkpoint;

/// Entries waiting for the writer; a full channel makes the workers wait.
const CHANNEL: usize = 1024;
/// Rows written in one transaction at most…
const BATCH_ROWS: usize = 1000;
/// …and payload bytes: the statement is another copy of them while it is
/// sent, outside the memory budget, so it stays small.
const BATCH_BYTES: usize = 2 << 20;

/// What the workers hand entries to.
#[derive(Clone)]
pub(crate) struct SpoolSender(mpsc::Sender<Entry>);

impl SpoolSender {
    /// Waits while the writer is behind (a full channel).
    pub(in crate::delivery) async fn send(&self, entry: Entry) {
        // The writer lives as long as the session's workers.
        let _ = self.0.send(entry).await;
    }
}

pub(crate) struct Writer {
    store: SpoolStore,
    entries: mpsc::Receiver<Entry>,
    checkpoint: Arc<Checkpoint>,
}

impl Writer {
    /// A writer to `store` for a session, and what feeds it.
    pub(crate) fn new(store: SpoolStore, checkpoint: Arc<Checkpoint>) -> (Writer, SpoolSender) {
        let (sender, entries) = mpsc::channel(CHANNEL);
        let writer = Writer {
            store,
            entries,
            checkpoint,
        };
        (writer, SpoolSender(sender))
    }

    /// Writes until every sender is gone (the session ends), or until the
    /// server goes away, which ends the session (its changes not written
    /// are not handled: the next session streams them again).
    pub(crate) async fn run(mut self) -> Result<(), SpoolError> {
        let mut batch = Vec::new();
        while let Some(first) = self.entries.recv().await {
            let mut bytes = first.event.payload.len();
            batch.push(first);
            while batch.len() < BATCH_ROWS && bytes < BATCH_BYTES {
                match self.entries.try_recv() {
                    Ok(entry) => {
                        bytes += entry.event.payload.len();
                        batch.push(entry);
                    }
                    Err(_) => break,
                }
            }
            self.write(&batch).await?;
            batch.clear();
        }
        Ok(())
    }

    /// Writes one batch, retrying until it is written: until then its
    /// changes are not handled, so the position stays and nothing is lost.
    async fn write(&self, batch: &[Entry]) -> Result<(), SpoolError> {
        let mut delay = Duration::from_secs(1);
        let added = loop {
            match self.store.insert(batch).await {
                Ok(added) => break added,
                Err(e) if e.is_server_going_away() => return Err(e),
                Err(e) => {
                    tracing::error!(spool = %self.store.table(), rows = batch.len(), error = %e, retry_in = ?delay,
                        "cannot write to the spool; the position is held until it is written");
                    self.store.reset().await;
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
            }
        };
        let mut shown = HashSet::new();
        for entry in batch {
            let name = entry.hook.name.as_str();
            if shown.insert(name) {
                entry
                    .hook
                    .spool
                    .add_rows(added.get(name).copied().unwrap_or(0));
            }
            entry.written.fetch_add(1, Ordering::Release);
            self.checkpoint.handled(entry.index, entry.event.tx);
        }
        Ok(())
    }
}
