//! Tracks out-of-order completions and yields the highest contiguous one, for cumulative acks.

use std::collections::VecDeque;

/// Deliveries are registered in delivery order and completed in any order; the tracker reports
/// how far the contiguous completed prefix reaches, so a source can acknowledge everything up to
/// there at once (AMQP `multiple`, a log's committed position).
#[derive(Debug)]
pub struct ContiguousTracker<V> {
    base: u64,
    window: VecDeque<Option<V>>,
}

impl<V> Default for ContiguousTracker<V> {
    fn default() -> Self {
        ContiguousTracker {
            base: 0,
            window: VecDeque::new(),
        }
    }
}

impl<V> ContiguousTracker<V> {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers the next delivery and returns its sequence number.
    pub fn register(&mut self) -> u64 {
        self.window.push_back(None);
        self.base + self.window.len() as u64 - 1
    }

    /// Marks `seq` complete with the value to report once the prefix reaches it.
    /// Unknown or already-passed sequence numbers are ignored (a stale settlement).
    pub fn complete(&mut self, seq: u64, value: V) -> bool {
        let Some(i) = seq.checked_sub(self.base) else {
            return false;
        };
        match self.window.get_mut(i as usize) {
            Some(slot @ None) => {
                *slot = Some(value);
                true
            }
            _ => false,
        }
    }

    /// Drops the completed prefix and returns the value of its last element, if it moved.
    pub fn advance(&mut self) -> Option<V> {
        let mut last = None;
        while matches!(self.window.front(), Some(Some(_))) {
            last = self.window.pop_front().flatten();
            self.base += 1;
        }
        last
    }

    /// Registered deliveries not yet passed by the prefix.
    pub fn outstanding(&self) -> usize {
        self.window.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reports_the_contiguous_prefix() {
        let mut t = ContiguousTracker::new();
        let s: Vec<u64> = (0..4).map(|_| t.register()).collect();
        assert_eq!(s, vec![0, 1, 2, 3]);
        t.complete(1, "b");
        assert_eq!(t.advance(), None);
        t.complete(0, "a");
        assert_eq!(t.advance(), Some("b"));
        assert!(!t.complete(0, "again"), "stale completion ignored");
        t.complete(3, "d");
        t.complete(2, "c");
        assert_eq!(t.advance(), Some("d"));
        assert_eq!(t.outstanding(), 0);
    }

    proptest! {
        #[test]
        fn prefix_never_passes_an_incomplete_delivery(order in Just((0u64..64).collect::<Vec<_>>()).prop_shuffle()) {
            let mut t = ContiguousTracker::new();
            for _ in 0..64 { t.register(); }
            let mut done = [false; 64];
            let mut reported = None;
            for seq in order {
                t.complete(seq, seq);
                done[seq as usize] = true;
                if let Some(v) = t.advance() { reported = Some(v); }
                if let Some(r) = reported {
                    prop_assert!(done[..=r as usize].iter().all(|d| *d));
                }
            }
            prop_assert_eq!(reported, Some(63));
        }
    }
}
