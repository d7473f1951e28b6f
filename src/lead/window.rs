//! The leads that changed between a chunk's watermarks, as the lead stage
//! saw them stream past: a chunk row of such a lead is superseded (the
//! live change carries a state at least as new), every other row is still
//! the lead's state at the high watermark and is handed on there.

use std::collections::HashSet;
use std::sync::Arc;

use crate::change::backfill::Chunk;

/// Opened at a chunk's low watermark, closed at its high one.
#[derive(Debug)]
pub(crate) struct Window {
    chunk: Arc<Chunk>,
    /// Lead keys (see `change::lead_key`) inserted, updated or deleted.
    changed: HashSet<u64>,
    /// The table was truncated in between: every row is superseded.
    truncated: bool,
}

impl Window {
    pub(crate) fn open(chunk: Arc<Chunk>) -> Window {
        Window {
            chunk,
            changed: HashSet::new(),
            truncated: false,
        }
    }

    /// A change (or delete) of lead `key` streamed past.
    pub(crate) fn saw(&mut self, key: u64) {
        self.changed.insert(key);
    }

    pub(crate) fn saw_truncate(&mut self) {
        self.truncated = true;
    }

    /// Whether this window was opened for `chunk`.
    pub(crate) fn is_for(&self, chunk: &Arc<Chunk>) -> bool {
        Arc::ptr_eq(&self.chunk, chunk)
    }

    /// Whether the chunk's row of lead `key` is older than a live change.
    pub(crate) fn supersedes(&self, key: u64) -> bool {
        self.truncated || self.changed.contains(&key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::Targets;

    #[test]
    fn a_row_is_superseded_only_by_a_change_of_its_own_lead() {
        let chunk = Chunk::new(1, 1, Targets::default());
        let mut window = Window::open(chunk.clone());
        window.saw(7);
        assert!(window.supersedes(7));
        assert!(!window.supersedes(8));
        assert!(window.is_for(&chunk));
        assert!(!window.is_for(&Chunk::new(1, 2, Targets::default())));
    }

    #[test]
    fn a_truncate_supersedes_every_row() {
        let mut window = Window::open(Chunk::new(1, 1, Targets::default()));
        window.saw_truncate();
        assert!(window.supersedes(1) && window.supersedes(2));
    }
}
