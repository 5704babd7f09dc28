//! Riverbed's SQL sinks: rows from messages, written idempotently in batches, with refused rows
//! isolated and dead-lettered, and source positions committed in the same transaction.
//!
//! # Layout
//! - `spec`: tables, columns, value sources, write modes, identifiers.
//! - `convert`: message fields to typed SQL values.
//! - `sqlgen`: SQL text per dialect (values are always bound).
//! - `classify`: transient vs row-refusing database errors.
//! - `table`: the dialect-independent sink (dedup, batch splitting, outcomes).
//! - `sqlite`: the SQLite backend.
//! - `offsets`: source positions stored with the data.

#![forbid(unsafe_code)]

mod classify;
mod convert;
mod offsets;
mod spec;
mod sqlgen;
mod sqlite;
mod table;

pub use classify::{ErrorClass, classify};
pub use offsets::{OFFSETS_TABLE, OffsetStore};
pub use spec::{Column, ColumnType, Ident, SqlValue, TableSpec, ValueSource, WriteMode, row_of};
pub use sqlgen::{Dialect, create_table, insert, rows_per_statement};
pub use sqlite::{SqliteTableSink, SqliteWriter, sqlite_pool};
pub use table::{OffsetUpdate, RowWriter, TableSink};
