//! One lane per lead: a lead's changes go out one at a time, in the order
//! they arrived, while different leads' changes go concurrently. Shared by
//! the live worker and the spool's drainer, which keep the same order.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

/// The leads with a change out, and their later changes waiting behind it.
pub(super) struct Lanes<T> {
    busy: HashMap<u64, VecDeque<T>, BuildHasherDefault<LeadKeyHasher>>,
    /// Changes out plus those waiting: what the caller bounds.
    held: usize,
}

impl<T> Lanes<T> {
    pub(super) fn new() -> Self {
        Lanes {
            busy: HashMap::default(),
            held: 0,
        }
    }

    /// Changes out and waiting.
    pub(super) fn held(&self) -> usize {
        self.held
    }

    pub(super) fn is_busy(&self, key: u64) -> bool {
        self.busy.contains_key(&key)
    }

    /// A change of lead `key` arrived: returned if it may go out now (its
    /// lead has none out), else kept behind the one that is.
    pub(super) fn arrive(&mut self, key: u64, change: T) -> Option<T> {
        self.held += 1;
        match self.busy.entry(key) {
            Entry::Occupied(mut waiting) => {
                waiting.get_mut().push_back(change);
                None
            }
            Entry::Vacant(lane) => {
                lane.insert(VecDeque::new());
                Some(change)
            }
        }
    }

    /// The change out for `key` is done: the next of its lead, which is
    /// now out, if one waits.
    pub(super) fn finished(&mut self, key: u64) -> Option<T> {
        self.held = self.held.saturating_sub(1);
        let next = self.busy.get_mut(&key).and_then(VecDeque::pop_front);
        if next.is_none() {
            self.busy.remove(&key);
        }
        next
    }

    /// The change out for `key` is done and its lane closes: what waited
    /// behind it, in order, for the caller to send elsewhere (the spool).
    pub(super) fn close(&mut self, key: u64) -> VecDeque<T> {
        let waiting = self.busy.remove(&key).unwrap_or_default();
        self.held = self.held.saturating_sub(1 + waiting.len());
        waiting
    }
}

/// A lead key is already a hash (see `change::lead_key`): it is its own
/// hash here, instead of being hashed again per change. A lane map holds
/// at most `max_in_flight` leads, so even keys made to collide cost little.
#[derive(Default)]
struct LeadKeyHasher(u64);

impl Hasher for LeadKeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed with it; anything else still spreads.
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, key: u64) {
        self.0 = key;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leads_later_changes_wait_behind_the_one_out_in_order() {
        let mut lanes = Lanes::new();
        assert_eq!(lanes.arrive(1, "a1"), Some("a1"));
        assert_eq!(
            lanes.arrive(2, "b1"),
            Some("b1"),
            "another lead goes at once"
        );
        assert_eq!(lanes.arrive(1, "a2"), None);
        assert_eq!(lanes.arrive(1, "a3"), None);
        assert_eq!(lanes.held(), 4);
        assert_eq!(lanes.finished(1), Some("a2"));
        assert_eq!(lanes.finished(1), Some("a3"));
        assert_eq!(lanes.finished(1), None);
        assert!(!lanes.is_busy(1));
        assert_eq!(lanes.held(), 1);
    }

    #[test]
    fn closing_a_lane_hands_back_what_waited_in_order() {
        let mut lanes = Lanes::new();
        lanes.arrive(7, 1);
        lanes.arrive(7, 2);
        lanes.arrive(7, 3);
        assert_eq!(lanes.close(7), [2, 3]);
        assert_eq!(lanes.held(), 0);
        assert!(!lanes.is_busy(7));
    }
}
