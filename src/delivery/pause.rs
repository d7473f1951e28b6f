//! Which webhooks are paused, by name, as the running sidecar knows it. The
//! durable record is a table (see `registry::pauses`); this is what the
//! workers consult: a paused webhook's changes go to the spool and wait
//! there, undelivered, until it is resumed.

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};

/// Shared by every webhook; cheap to clone.
#[derive(Debug, Clone, Default)]
pub(crate) struct Pauses(Arc<RwLock<BTreeSet<String>>>);

impl Pauses {
    pub(crate) fn contains(&self, name: &str) -> bool {
        self.0.read().is_ok_and(|paused| paused.contains(name))
    }

    /// Replaces the set; returns the names paused and resumed by it.
    pub(crate) fn set(&self, now: BTreeSet<String>) -> (Vec<String>, Vec<String>) {
        let Ok(mut paused) = self.0.write() else {
            return (Vec::new(), Vec::new());
        };
        let newly = now.difference(&paused).cloned().collect();
        let resumed = paused.difference(&now).cloned().collect();
        *paused = now;
        (newly, resumed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setting_the_pauses_reports_what_was_paused_and_resumed() {
        let pauses = Pauses::default();
        let (paused, resumed) = pauses.set(["a".to_owned(), "b".to_owned()].into());
        assert_eq!((paused, resumed), (vec!["a".into(), "b".into()], vec![]));
        let (paused, resumed) = pauses.set(["b".to_owned()].into());
        assert_eq!((paused, resumed), (vec![], vec!["a".to_owned()]));
        assert!(pauses.contains("b") && !pauses.contains("a"));
    }
}
