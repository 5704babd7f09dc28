//! The dialect-independent half of a table sink: rows from messages, in-batch dedup, isolating
//! refused rows by splitting the batch, and per-message outcomes.
//!
//! Splitting is bounded: a range the database refuses is halved until the refused rows stand
//! alone, but after [`SPLIT_BUDGET`] statements in one batch a refused range is no longer
//! halved: its rows are refused together with the database's error (every remaining range is
//! still tried once, so rows that can be written are). One bad row in 500 takes about 19
//! statements; a batch whose every row is refused takes about 70 instead of 999.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use riverbed_core::{BatchOutcome, Failure, Message, Outcome, Sink};

use crate::advance::{Advance, spawn_timer};
use crate::batch_position::BatchPositions;
use crate::classify::{ErrorClass, classify};
use crate::dedupe::{Row, dedupe};
use crate::settled::SettledPosition;
use crate::spec::{SqlValue, TableSpec, row_of};
use crate::sqlgen::Dialect;

/// Where a batch's source position is committed, in the same transaction as its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetUpdate {
    /// The pipeline partition the batch came from.
    pub partition: u32,
    /// The highest source position at or below which every message of the batch is
    /// committed once this transaction is.
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

    /// Moves every stored partition position below `position` up to it (writers that store
    /// no offsets do nothing).
    async fn advance_offsets(&self, position: u64) -> Result<(), sqlx::Error> {
        let _ = position;
        Ok(())
    }
}

/// A sink writing messages as rows of one table.
pub struct TableSink<W> {
    /// Shared with the timer that advances stored positions (it holds a weak reference, so
    /// it stops when the sink is dropped).
    writer: Arc<W>,
    spec: Arc<TableSpec>,
    name: String,
    store_offsets: bool,
    advance: Option<Arc<Advance>>,
}

impl<W: RowWriter> TableSink<W> {
    /// A sink named `name` writing through `writer`; with `store_offsets`, every transaction
    /// also records the batch's highest source position.
    pub fn new(name: &str, writer: W, spec: Arc<TableSpec>, store_offsets: bool) -> Self {
        TableSink {
            writer: Arc::new(writer),
            spec,
            name: name.to_owned(),
            store_offsets,
            advance: None,
        }
    }

    /// Follows the source's settled position (see [`crate::OffsetStore::advance_all`]): a
    /// recorded position never passes it, and every stored partition position is moved up to
    /// it every second from a timer (while the sink lives, when a tokio runtime is present),
    /// after writes (at most once a second) and when the sink closes, so partitions, or a
    /// whole sink, that receive nothing do not hold the resume point where the run began.
    /// Without settled tracking, a later batch can record a position past a message refused
    /// here or by another sink whose dead letter is not stored yet: a crash then would
    /// resume past it.
    pub fn with_settled(mut self, settled: SettledPosition) -> Self {
        let advance = Arc::new(Advance::new(settled));
        if self.store_offsets {
            let writer = Arc::downgrade(&self.writer);
            spawn_timer(self.name.clone(), writer, advance.clone());
        }
        self.advance = Some(advance);
        self
    }

    fn offset_of(
        &self,
        batch: &[Message],
        positions: &BatchPositions,
        committed: &[bool],
        range: &Range<usize>,
    ) -> Option<OffsetUpdate> {
        if !self.store_offsets {
            return None;
        }
        let mut position = positions.safe(committed, range)?;
        if let Some(advance) = &self.advance {
            // Never past the source's settled prefix: a message of an earlier batch, or one
            // another sink refused, is settled only once its dead letter is stored, and a
            // crash before that must not resume past it. (A restart re-reads what lies between,
            // which the table absorbs by its key.)
            position = position.min(advance.settled()?);
        }
        Some(OffsetUpdate {
            partition: batch.first()?.meta.partition,
            position,
        })
    }

    async fn advance_settled(&self, force: bool) {
        if let Some(advance) = &self.advance {
            advance.run(&self.name, &*self.writer, force).await;
        }
    }
}

/// Statements one batch may spend isolating refused rows before refused ranges are no longer
/// split (see the module docs).
pub const SPLIT_BUDGET: usize = 64;

impl<W: RowWriter> TableSink<W> {
    /// Writes `kept` in ranges, splitting refused ones within the budget; fills `outcomes`
    /// (one per kept row) and returns how many rows the database reports written.
    async fn write_kept(
        &self,
        batch: &[Message],
        kept: &[Row],
        positions: &BatchPositions,
        outcomes: &mut [Outcome],
    ) -> u64 {
        let mut committed = vec![false; kept.len()];
        let mut pending: Vec<Range<usize>> = Vec::with_capacity(16);
        pending.push(0..kept.len());
        let mut statements = 0;
        let mut written = 0u64;
        while let Some(range) = pending.pop() {
            if range.is_empty() {
                continue;
            }
            statements += 1;
            let refs: Vec<&[SqlValue]> = kept[range.clone()]
                .iter()
                .map(|(_, r)| r.as_slice())
                .collect();
            let offset = self.offset_of(batch, positions, &committed, &range);
            let e = match self.writer.write_rows(&refs, offset).await {
                Ok(n) => {
                    written += n;
                    committed[range].fill(true);
                    continue;
                }
                Err(e) => e,
            };
            match classify(&e, self.writer.dialect()) {
                ErrorClass::Unavailable(f) => {
                    fail_rest(outcomes, range, &mut pending, Outcome::Unavailable(f));
                    break;
                }
                ErrorClass::Transient(f) => {
                    fail_rest(outcomes, range, &mut pending, Outcome::Transient(f));
                    break;
                }
                ErrorClass::Row(f) if range.len() == 1 => {
                    outcomes[range.start] = Outcome::Permanent(f)
                }
                ErrorClass::Row(f) if statements >= SPLIT_BUDGET => {
                    let f = unisolated(f, range.len(), statements);
                    outcomes[range].fill(Outcome::Permanent(f));
                }
                ErrorClass::Row(_) => {
                    let mid = range.start + range.len() / 2;
                    pending.push(mid..range.end);
                    pending.push(range.start..mid);
                }
            }
        }
        written
    }
}

/// Fails `range` and every range still pending with `o`: they stay uncommitted while earlier
/// ranges committed, so later rows never commit before earlier ones of their key.
fn fail_rest(
    outcomes: &mut [Outcome],
    range: Range<usize>,
    pending: &mut Vec<Range<usize>>,
    o: Outcome,
) {
    for r in std::iter::once(range).chain(pending.drain(..)) {
        outcomes[r].fill(o.clone());
    }
}

/// The failure of rows refused together once the split budget is spent.
fn unisolated(f: Failure, rows: usize, statements: usize) -> Failure {
    let error = format!(
        "{} (refused with {rows} rows of its batch: isolating stopped after {statements} statements)",
        f.error
    );
    Failure { error, ..f }
}

#[async_trait]
impl<W: RowWriter> Sink for TableSink<W> {
    async fn write(&self, batch: &[Message]) -> BatchOutcome {
        let mut outcomes = vec![Outcome::Ok; batch.len()];
        let mut rows = Vec::with_capacity(batch.len());
        for (i, m) in batch.iter().enumerate() {
            match row_of(&self.spec, m, self.writer.dialect()) {
                Ok(r) => rows.push((i, r)),
                Err(f) => outcomes[i] = Outcome::Permanent(f),
            }
        }
        let (kept, dropped) = dedupe(&self.spec, rows);
        let positions = BatchPositions::new(batch, &kept, &dropped);
        let mut kept_outcome = vec![Outcome::Ok; kept.len()];
        let written = self
            .write_kept(batch, &kept, &positions, &mut kept_outcome)
            .await;
        self.advance_settled(false).await;
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

    async fn close(&self) -> Result<(), Failure> {
        self.advance_settled(true).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::spec::{Column, ColumnType, Ident, ValueSource, WriteMode};

    /// A writer refusing every statement that holds a row whose `id` starts with "bad", as a
    /// constraint would; it records each statement's rows and offset, and whether it committed.
    #[derive(Default)]
    pub(crate) struct Refusing {
        pub statements: Mutex<Vec<(usize, Option<OffsetUpdate>, bool)>>,
    }

    #[async_trait]
    impl RowWriter for Refusing {
        fn dialect(&self) -> Dialect {
            Dialect::Postgres
        }

        async fn write_rows(
            &self,
            rows: &[&[SqlValue]],
            offset: Option<OffsetUpdate>,
        ) -> Result<u64, sqlx::Error> {
            let bad = |r: &&&[SqlValue]| matches!(&r[0], SqlValue::Text(t) if t.starts_with("bad"));
            let refused = rows.iter().find(bad);
            let entry = (rows.len(), offset, refused.is_none());
            self.statements.lock().unwrap().push(entry);
            match refused {
                Some(r) => Err(sqlx::Error::Encode(format!("refused {:?}", r[0]).into())),
                None => Ok(rows.len() as u64),
            }
        }
    }

    pub(crate) fn sink(offsets: bool) -> TableSink<Refusing> {
        let spec = TableSpec {
            table: vec![Ident::new("t").unwrap()],
            columns: vec![Column {
                name: Ident::new("id").unwrap(),
                ty: ColumnType::Text,
                from: ValueSource::Pointer("/id".into()),
                required: true,
            }],
            key: vec![Ident::new("id").unwrap()],
            mode: WriteMode::Insert,
            create: false,
        };
        TableSink::new("t", Refusing::default(), Arc::new(spec), offsets)
    }

    pub(crate) fn msg(id: &str) -> Message {
        Message::from_json(serde_json::json!({ "id": id }))
    }

    fn refused(outcome: &BatchOutcome, n: usize) -> Vec<usize> {
        (0..n).filter(|i| !outcome.get(*i).is_ok()).collect()
    }

    #[tokio::test]
    async fn a_batch_whose_every_row_is_refused_takes_a_bounded_number_of_statements() {
        let sink = sink(false);
        let batch: Vec<Message> = (0..500).map(|i| msg(&format!("bad{i}"))).collect();
        let outcome = sink.write(&batch).await;
        assert_eq!(refused(&outcome, 500).len(), 500);
        let statements = sink.writer.statements.lock().unwrap().len();
        // Without the budget: 2 * 500 - 1 = 999 statements.
        assert!(
            (SPLIT_BUDGET..=SPLIT_BUDGET + 10).contains(&statements),
            "{statements} statements"
        );
        let Outcome::Permanent(f) = outcome.get(499) else {
            panic!("{outcome:?}")
        };
        assert!(f.error.contains("refused"), "{}", f.error);
    }

    #[tokio::test]
    async fn scattered_refused_rows_are_each_isolated_and_the_rest_written() {
        let sink = sink(false);
        let bad = [3, 250, 437];
        let batch: Vec<Message> = (0..500)
            .map(|i| match bad.contains(&i) {
                true => msg(&format!("bad{i}")),
                false => msg(&format!("ok{i}")),
            })
            .collect();
        let outcome = sink.write(&batch).await;
        assert_eq!(refused(&outcome, 500), bad);
        let Outcome::Permanent(f) = outcome.get(250) else {
            panic!("{outcome:?}")
        };
        assert!(
            f.error.contains("bad250") && !f.error.contains("together"),
            "{}",
            f.error
        );
        let statements = sink.writer.statements.lock().unwrap();
        let written: usize = statements.iter().filter(|s| s.2).map(|s| s.0).sum();
        assert!(statements.len() < SPLIT_BUDGET, "{}", statements.len());
        assert_eq!(written, 497);
    }

    #[tokio::test]
    async fn a_split_batch_never_records_a_position_past_an_uncommitted_message() {
        let sink = sink(true);
        let mut batch = vec![msg("ok0"), msg("bad1"), msg("ok2"), msg("ok3")];
        for (i, m) in batch.iter_mut().enumerate() {
            m.meta.position = Some(10 + i as u64);
            m.meta.partition = 1;
        }
        let outcome = sink.write(&batch).await;
        assert_eq!(refused(&outcome, 4), [1]);
        let recorded: Vec<Option<u64>> = sink
            .writer
            .statements
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.2)
            .map(|s| s.1.map(|o| o.position))
            .collect();
        // The refused row at 11 is only settled by its dead letter, after this batch: the
        // rows at 12 and 13 commit, but the batch records no further than 10.
        assert_eq!(recorded, [Some(10), Some(10)]);
    }
}
