//! The dialect-independent half of a table sink: rows from messages, in-batch dedup, isolating
//! refused rows by splitting the batch, and per-message outcomes.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use riverbed_core::{BatchOutcome, Message, Outcome, Sink};

use crate::classify::{ErrorClass, classify};
use crate::spec::{SqlValue, TableSpec, WriteMode, row_of};
use crate::sqlgen::Dialect;

/// Where a batch's source position is committed, in the same transaction as its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetUpdate {
    /// The pipeline partition the batch came from.
    pub partition: u32,
    /// The highest source position among the rows written.
    pub position: u64,
}

/// The database-specific half of a table sink.
#[async_trait]
pub trait RowWriter: Send + Sync + 'static {
    /// The SQL dialect, for error classification.
    fn dialect(&self) -> Dialect;

    /// Writes `rows` in one transaction, with the offset update if any; returns how many rows
    /// the database reports as inserted or updated.
    async fn write_rows(
        &self,
        rows: &[&[SqlValue]],
        offset: Option<OffsetUpdate>,
    ) -> Result<u64, sqlx::Error>;
}

/// A sink writing messages as rows of one table.
pub struct TableSink<W> {
    writer: W,
    spec: Arc<TableSpec>,
    name: String,
    store_offsets: bool,
}

impl<W: RowWriter> TableSink<W> {
    /// A sink named `name` writing through `writer`; with `store_offsets`, every transaction
    /// also records the batch's highest source position.
    pub fn new(name: &str, writer: W, spec: Arc<TableSpec>, store_offsets: bool) -> Self {
        TableSink {
            writer,
            spec,
            name: name.to_owned(),
            store_offsets,
        }
    }

    fn offset_of(
        &self,
        batch: &[Message],
        rows: &[(usize, Vec<SqlValue>)],
        range: Range<usize>,
    ) -> Option<OffsetUpdate> {
        if !self.store_offsets {
            return None;
        }
        let position = rows[range]
            .iter()
            .filter_map(|(i, _)| batch[*i].meta.position)
            .max()?;
        Some(OffsetUpdate {
            partition: batch[rows[0].0].meta.partition,
            position,
        })
    }
}

/// A row with the index of its message in the batch.
type Row = (usize, Vec<SqlValue>);

/// Keeps one row per key: the first for inserts (what a redelivery-proof insert means, and what
/// the inbox relies on: one run per message id), the newest (by version, else the last) for
/// upserts (a statement may not update a row twice). Returns the kept rows and, for each dropped
/// one, the kept row it follows.
fn dedupe(spec: &TableSpec, rows: Vec<Row>) -> (Vec<Row>, Vec<(usize, usize)>) {
    let key_idx = spec.key_indexes();
    if key_idx.is_empty() {
        return (rows, Vec::new());
    }
    let upsert = matches!(spec.mode, WriteMode::Upsert { .. });
    let version = spec.version_index();
    let tombstone = spec.tombstone_index();
    let key_hash = |row: &[SqlValue]| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key_idx.iter().for_each(|k| row[*k].hash_into(&mut h));
        std::hash::Hasher::finish(&h)
    };
    let same_key = |a: &[SqlValue], b: &[SqlValue]| key_idx.iter().all(|k| a[*k] == b[*k]);
    let mut kept: Vec<Row> = Vec::with_capacity(rows.len());
    let mut by_key: HashMap<u64, Vec<usize>> = HashMap::with_capacity(rows.len());
    let mut dropped = Vec::new();
    for (i, row) in rows {
        let slots = by_key.entry(key_hash(&row)).or_default();
        match slots.iter().copied().find(|s| same_key(&kept[*s].1, &row)) {
            None => {
                slots.push(kept.len());
                kept.push((i, row));
            }
            Some(slot) if upsert && supersedes(&row, &kept[slot].1, version, tombstone) => {
                dropped.push((kept[slot].0, slot));
                kept[slot] = (i, row);
            }
            Some(slot) => dropped.push((i, slot)),
        }
    }
    (kept, dropped)
}

/// Whether `row` replaces `kept` (same key, same batch): a newer version does, an older one does
/// not; on a tie the later row does, unless only the kept one is a tombstone (deletes win ties).
fn supersedes(
    row: &[SqlValue],
    kept: &[SqlValue],
    version: Option<usize>,
    tombstone: Option<usize>,
) -> bool {
    let Some(v) = version else { return true };
    match row[v].compare(&kept[v]) {
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Less => false,
        std::cmp::Ordering::Equal => tombstone
            .is_none_or(|t| row[t] == SqlValue::Bool(true) || kept[t] != SqlValue::Bool(true)),
    }
}

#[async_trait]
impl<W: RowWriter> Sink for TableSink<W> {
    async fn write(&self, batch: &[Message]) -> BatchOutcome {
        let mut outcomes = vec![Outcome::Ok; batch.len()];
        let mut rows = Vec::with_capacity(batch.len());
        for (i, m) in batch.iter().enumerate() {
            match row_of(&self.spec, m) {
                Ok(r) => rows.push((i, r)),
                Err(f) => outcomes[i] = Outcome::Permanent(f),
            }
        }
        let (kept, dropped) = dedupe(&self.spec, rows);
        let mut kept_outcome = vec![Outcome::Ok; kept.len()];
        let mut pending: Vec<Range<usize>> = Vec::new();
        pending.push(0..kept.len());
        let mut written = 0u64;
        while let Some(range) = pending.pop() {
            if range.is_empty() {
                continue;
            }
            let refs: Vec<&[SqlValue]> = kept[range.clone()]
                .iter()
                .map(|(_, r)| r.as_slice())
                .collect();
            match self
                .writer
                .write_rows(&refs, self.offset_of(batch, &kept, range.clone()))
                .await
            {
                Ok(n) => written += n,
                Err(e) => match classify(&e, self.writer.dialect()) {
                    ErrorClass::Transient(f) => {
                        // This range and everything after it stay uncommitted; earlier ranges
                        // committed. Later rows never commit before earlier ones of their key.
                        for r in std::iter::once(range).chain(pending.drain(..)) {
                            for o in &mut kept_outcome[r] {
                                *o = Outcome::Transient(f.clone());
                            }
                        }
                        break;
                    }
                    ErrorClass::Row(f) if range.len() == 1 => {
                        kept_outcome[range.start] = Outcome::Permanent(f);
                    }
                    ErrorClass::Row(_) => {
                        let mid = range.start + range.len() / 2;
                        pending.push(mid..range.end);
                        pending.push(range.start..mid);
                    }
                },
            }
        }
        let attempted = kept
            .iter()
            .zip(&kept_outcome)
            .filter(|(_, o)| o.is_ok())
            .count() as u64
            + dropped
                .iter()
                .filter(|(_, slot)| kept_outcome[*slot].is_ok())
                .count() as u64;
        if attempted > written {
            metrics::counter!("riverbed_sql_rows_skipped_total", "sink" => self.name.clone())
                .increment(attempted - written);
        }
        metrics::counter!("riverbed_sql_rows_written_total", "sink" => self.name.clone())
            .increment(written);
        for (slot, (i, _)) in kept.iter().enumerate() {
            outcomes[*i] = kept_outcome[slot].clone();
        }
        for (i, slot) in dropped {
            outcomes[i] = kept_outcome[slot].clone();
        }
        if outcomes.iter().all(Outcome::is_ok) {
            BatchOutcome::Committed
        } else {
            BatchOutcome::Each(outcomes)
        }
    }
}
