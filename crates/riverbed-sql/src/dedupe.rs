//! In-batch dedup: one row per key, so a statement never touches a row twice and a
//! redelivered message within its own batch is written once.

use std::collections::HashMap;

use crate::spec::{SqlValue, TableSpec, WriteMode};

/// A row with the index of its message in the batch.
pub(crate) type Row = (usize, Vec<SqlValue>);

/// Keeps one row per key: the first for inserts (what a redelivery-proof insert means, and what
/// the inbox relies on: one run per message id), the newest (by version, else the last) for
/// upserts (a statement may not update a row twice). Returns the kept rows and, for each dropped
/// one, the kept row it follows.
pub(crate) fn dedupe(spec: &TableSpec, rows: Vec<Row>) -> (Vec<Row>, Vec<(usize, usize)>) {
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
