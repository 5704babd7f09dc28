//! The deliveries of one channel generation awaiting settlement, and what to send the broker.
//!
//! Pure bookkeeping, no I/O: [`crate::acker`] drives it and sends the frames.

use std::collections::{BTreeSet, VecDeque};

use riverbed_core::ContiguousTracker;

/// Bits of an ack token holding the sequence number; the rest hold the generation.
const SEQ_BITS: u32 = 44;
const SEQ_MASK: u64 = (1 << SEQ_BITS) - 1;
/// Generations wrap after this many reconnects (a delivery would have to outlive a million
/// reconnects to be mistaken for a live one).
pub(crate) const GEN_MASK: u32 = (1 << (64 - SEQ_BITS)) - 1;

/// The token of delivery `seq` of generation `generation`.
pub(crate) fn token(generation: u32, seq: u64) -> u64 {
    (u64::from(generation & GEN_MASK) << SEQ_BITS) | (seq & SEQ_MASK)
}

/// The generation and sequence number of a token.
pub(crate) fn split(token: u64) -> (u32, u64) {
    ((token >> SEQ_BITS) as u32, token & SEQ_MASK)
}

/// One registered delivery.
#[derive(Debug, Clone, Copy)]
struct Slot {
    tag: u64,
    offset: Option<u64>,
    /// Settled on its own (nack): a cumulative ack must not name it.
    nacked: bool,
}

/// What a flush should send: individual nacks first, then one cumulative ack and the
/// individual acks of deliveries settled ahead of an earlier one still in flight.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Flush {
    /// `(delivery tag, requeue)` to nack one by one, before the ack.
    pub nacks: Vec<(u64, bool)>,
    /// Acknowledge every delivery up to this tag (`multiple`), with how many that covers.
    pub ack: Option<(u64, u64)>,
    /// Tags to acknowledge one by one (`multiple` unset): settled while a lower tag is not.
    pub acks: Vec<u64>,
    /// The stream offset of the last delivery the contiguous prefix passed.
    pub settled_offset: Option<u64>,
}

/// The deliveries of one channel generation.
///
/// Deliveries are settled in registration order (the contiguous prefix), but registration
/// order need not be tag order: consumers of several queues share the channel's one sequence
/// of delivery tags and their deliveries interleave as the consumers are polled. A cumulative
/// ack is sent only up to a tag below which every tag of the channel (they start at 1, without
/// gaps) is settled; a delivery settled above an unsettled tag is acknowledged on its own.
#[derive(Debug)]
pub(crate) struct Window {
    tracker: ContiguousTracker<u64>,
    slots: VecDeque<Slot>,
    base: u64,
    pending_nacks: Vec<(u64, bool)>,
    /// Every tag up to this one is settled and its frame sent.
    settled_through: u64,
    /// Settled tags above `settled_through` (sent already, or sent by this flush).
    settled_above: BTreeSet<u64>,
    /// Completions since the last flush.
    pub completed: usize,
}

impl Window {
    /// An empty window.
    pub fn new() -> Self {
        Window {
            tracker: ContiguousTracker::new(),
            slots: VecDeque::new(),
            base: 0,
            pending_nacks: Vec::new(),
            settled_through: 0,
            settled_above: BTreeSet::new(),
            completed: 0,
        }
    }

    /// Registers the next delivery (in delivery order) and returns its sequence number.
    pub fn register(&mut self, tag: u64, offset: Option<u64>) -> u64 {
        let seq = self.tracker.register();
        self.slots.push_back(Slot {
            tag,
            offset,
            nacked: false,
        });
        seq
    }

    /// Marks `seq` acknowledged. False for an unknown or already settled delivery.
    pub fn ack(&mut self, seq: u64) -> bool {
        let done = self.tracker.complete(seq, seq);
        self.completed += usize::from(done);
        done
    }

    /// Marks `seq` settled by an individual nack, queued to go before any later cumulative ack.
    pub fn nack(&mut self, seq: u64, requeue: bool) -> bool {
        let Some(i) = seq
            .checked_sub(self.base)
            .and_then(|i| usize::try_from(i).ok())
            .filter(|i| *i < self.slots.len())
        else {
            return false;
        };
        if !self.tracker.complete(seq, seq) {
            return false;
        }
        self.slots[i].nacked = true;
        self.pending_nacks.push((self.slots[i].tag, requeue));
        self.completed += 1;
        true
    }

    /// The stream offset of `seq`, if it is still in the window.
    pub fn offset(&self, seq: u64) -> Option<u64> {
        let i = usize::try_from(seq.checked_sub(self.base)?).ok()?;
        self.slots.get(i)?.offset
    }

    /// Takes what should be sent now. The nacks and the prefix are taken together, so a nack is
    /// always sent before the cumulative ack that passes it.
    pub fn take_flush(&mut self) -> Flush {
        self.completed = 0;
        let mut flush = Flush {
            nacks: std::mem::take(&mut self.pending_nacks),
            ..Flush::default()
        };
        let Some(last) = self.tracker.advance() else {
            return flush;
        };
        let mut passed = Vec::new();
        while self.base <= last {
            let slot = self
                .slots
                .pop_front()
                .expect("every registered seq has a slot");
            self.base += 1;
            flush.settled_offset = slot.offset.or(flush.settled_offset);
            if slot.tag > self.settled_through {
                self.settled_above.insert(slot.tag);
            }
            passed.push(slot);
        }
        while self.settled_above.remove(&(self.settled_through + 1)) {
            self.settled_through += 1;
        }
        let mut covered = 0;
        for slot in passed.into_iter().filter(|s| !s.nacked) {
            if slot.tag <= self.settled_through {
                // The broker rejects a cumulative ack naming a tag it no longer holds, so it
                // names the highest delivery acknowledged here, never a nacked one nor one
                // acknowledged on its own before; every tag below it is settled.
                covered += 1;
                let highest = flush.ack.map_or(slot.tag, |(t, _)| t.max(slot.tag));
                flush.ack = Some((highest, covered));
            } else {
                flush.acks.push(slot.tag);
            }
        }
        flush
    }

    /// Deliveries registered and not yet passed by the prefix.
    #[cfg(test)]
    pub fn outstanding(&self) -> usize {
        self.tracker.outstanding()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        assert_eq!(split(token(5, 77)), (5, 77));
        assert_eq!(split(token(GEN_MASK, SEQ_MASK)), (GEN_MASK, SEQ_MASK));
    }

    #[test]
    fn acks_the_contiguous_prefix_and_never_names_a_nacked_tag() {
        let mut w = Window::new();
        let s: Vec<u64> = (1..=5)
            .map(|tag| w.register(tag, Some(100 + tag)))
            .collect();
        assert!(w.ack(s[1]));
        assert_eq!(w.take_flush().ack, None, "tag 1 is not settled yet");
        w.ack(s[0]);
        w.nack(s[2], true);
        let f = w.take_flush();
        assert_eq!(f.nacks, vec![(3, true)]);
        assert_eq!(f.ack, Some((2, 2)), "tag 3 was nacked: the ack names tag 2");
        assert_eq!(f.settled_offset, Some(103));
        assert!(!w.ack(s[1]), "a settled delivery cannot settle twice");
        w.ack(s[4]);
        w.ack(s[3]);
        let f = w.take_flush();
        assert_eq!(f.ack, Some((5, 2)));
        assert_eq!(w.outstanding(), 0);
    }

    /// Several consumers share a channel (partition queues): their deliveries are numbered in
    /// one sequence but can reach the source out of tag order. A cumulative ack naming tag 3
    /// while tag 2 is still being processed would acknowledge tag 2 early (lost on a crash),
    /// and the later ack of tag 2 would close the channel (`unknown delivery tag`).
    #[test]
    fn deliveries_registered_out_of_tag_order_are_never_acknowledged_early() {
        let mut w = Window::new();
        let one = w.register(1, None);
        let three = w.register(3, None);
        let two = w.register(2, None);
        w.ack(one);
        w.ack(three);
        let f = w.take_flush();
        assert_eq!(
            f.ack,
            Some((1, 1)),
            "tag 2 is in flight: no cumulative ack passes it"
        );
        assert_eq!(f.acks, vec![3], "tag 3 is acknowledged on its own");
        w.ack(two);
        let f = w.take_flush();
        assert_eq!(
            f.ack,
            Some((2, 1)),
            "tag 3 is acknowledged already: the ack names 2"
        );
        assert!(f.acks.is_empty());
        // Tag 5 overtakes tag 4 and both are settled in registration order: tag 5 goes alone.
        let five = w.register(5, None);
        let four = w.register(4, None);
        w.ack(five);
        let f = w.take_flush();
        assert_eq!(f.ack, None, "a cumulative ack naming 5 would cover tag 4");
        assert_eq!(f.acks, vec![5]);
        w.ack(four);
        let f = w.take_flush();
        assert_eq!(f.ack, Some((4, 1)), "every tag up to 5 is settled again");
        assert!(f.acks.is_empty());
    }

    #[test]
    fn a_prefix_of_only_nacks_sends_no_ack() {
        let mut w = Window::new();
        let a = w.register(1, None);
        w.nack(a, false);
        let f = w.take_flush();
        assert_eq!(f.nacks, vec![(1, false)]);
        assert_eq!(f.ack, None);
    }
}
