//! Which source position a (partial) write of a batch may record: the highest one at or below
//! which every message of the batch is committed. Splitting commits a batch in several
//! transactions, and in-batch dedup may keep a later message in an earlier row, so "the highest
//! position written" could pass a message that is not committed yet (a crash would then skip
//! it on resume).

use std::ops::Range;

use riverbed_core::Message;

use crate::dedupe::Row;

/// The batch's source positions in order, each with the kept row whose commit settles it
/// (`None`: a message refused before writing, which is only settled by the dead-letter step
/// after this batch).
pub(crate) struct BatchPositions {
    sorted: Vec<(u64, Option<usize>)>,
}

impl BatchPositions {
    /// The positions of `batch`, where `kept` are the rows written and `dropped` the
    /// `(message, kept row)` pairs of in-batch duplicates.
    pub fn new(batch: &[Message], kept: &[Row], dropped: &[(usize, usize)]) -> Self {
        let mut slot_of: Vec<Option<usize>> = vec![None; batch.len()];
        for (slot, (i, _)) in kept.iter().enumerate() {
            slot_of[*i] = Some(slot);
        }
        for (i, slot) in dropped {
            slot_of[*i] = Some(*slot);
        }
        let mut sorted: Vec<(u64, Option<usize>)> = batch
            .iter()
            .zip(slot_of)
            .filter_map(|(m, slot)| m.meta.position.map(|p| (p, slot)))
            .collect();
        sorted.sort_unstable_by_key(|(p, _)| *p);
        BatchPositions { sorted }
    }

    /// The highest position at or below which every message is committed once `range` (of
    /// kept rows) commits too, given the rows `committed` so far.
    pub fn safe(&self, committed: &[bool], range: &Range<usize>) -> Option<u64> {
        let done = |slot: Option<usize>| slot.is_some_and(|s| committed[s] || range.contains(&s));
        self.sorted
            .iter()
            .take_while(|(_, slot)| done(*slot))
            .last()
            .map(|(p, _)| *p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::SqlValue;

    fn at(p: u64) -> Message {
        let mut m = Message::new("x");
        m.meta.position = Some(p);
        m
    }

    #[test]
    fn a_partial_write_never_records_past_an_uncommitted_message() {
        // Messages at 10, 11, 12, 13; 13 is a newer update of 10's key, kept in row 0; 12
        // was refused before writing.
        let batch = [at(10), at(11), at(12), at(13)];
        let kept: Vec<Row> = vec![(3, vec![SqlValue::Int(1)]), (1, vec![SqlValue::Int(2)])];
        let positions = BatchPositions::new(&batch, &kept, &[(0, 0)]);
        // Row 0 (messages 10 and 13) commits alone: 11 is not committed, so only 10 counts.
        assert_eq!(positions.safe(&[false, false], &(0..1)), Some(10));
        // Row 1 alone: 10 is not committed: nothing may be recorded.
        assert_eq!(positions.safe(&[false, false], &(1..2)), None);
        // Both: 12 was refused before writing, so the batch records 11.
        assert_eq!(positions.safe(&[true, false], &(1..2)), Some(11));
    }
}
