//! Riverbed's SQL sinks: rows from messages, written idempotently in batches, with refused rows
//! isolated and dead-lettered, and source positions committed in the same transaction.
//!
//! # Layout
//! - `config`: the TOML configuration of the PostgreSQL sink ([`PostgresSinkConfig`]).
//! - `connection`: how to reach PostgreSQL ([`PostgresConnectionConfig`]).
//! - `spec`: tables, columns, value sources, write modes (append, versioned upsert with
//!   tombstones), identifiers.
//! - `convert`: message fields to typed SQL values.
//! - `sqlgen`: SQL text per dialect (values are always bound).
//! - `classify`: transient vs row-refusing database errors.
//! - `ddl`: table creation serialised between instances that start together.
//! - `table`: the dialect-independent sink (batch splitting within a budget, outcomes).
//! - `dedupe`: one row per key within a batch.
//! - `sqlite`: the SQLite backend.
//! - `postgres`: the PostgreSQL backend (`UNNEST` or multi-row `VALUES`).
//! - `inbox`: user SQL run once per message id (effectively-once for any statement).
//! - `lease`: the singleton lease, an advisory lock on a dedicated connection.
//! - `outbox`: the transactional outbox: table, [`Outbox::enqueue`] and the relay source
//!   [`OutboxSource`] (per-entity claims with `FOR UPDATE SKIP LOCKED`).
//! - `offsets`: source positions stored with the data (SQLite and PostgreSQL).
//! - `advance`: when stored positions move up to the settled position (timer, writes, close).
//! - `batch_position`: the position a partial write of a batch may record.
//! - `settled`: a source wrapper publishing how far deliveries are settled
//!   ([`TrackSettled`], [`SettledPosition`]), so idle partitions do not hold resumes back.
//! - `totals`: a totals table kept in the same transaction as the rows ([`TotalsTableConfig`]);
//!   `totals_seed`: its one-time seed from history.
//! - `query_totals`: [`QueryTotals`], a totals query as a [`riverbed_core::TotalsSource`].
//! - `url`: database URLs whose passwords never reach logs.
//! - `error`: the errors of building sinks.

#![forbid(unsafe_code)]

mod advance;
mod batch_position;
mod classify;
mod config;
mod connection;
mod convert;
mod ddl;
mod dedupe;
mod error;
mod inbox;
mod lease;
mod offsets;
mod outbox;
mod postgres;
mod query_totals;
mod settled;
mod spec;
mod sqlgen;
mod sqlite;
mod table;
mod totals;
mod totals_seed;
mod url;

pub use classify::{ErrorClass, classify};
pub use config::{ColumnConfig, PostgresSinkConfig, SinkMode, TombstoneConfig};
pub use connection::{PostgresConnectionConfig, SslMode};
pub use error::{Error, Result};
pub use inbox::{INBOX_TABLE, InboxSink, InboxWriter, NamedStatement, compile_named};
pub use lease::PgLease;
pub use offsets::{NOTHING_COMMITTED, OFFSETS_TABLE, OffsetStore};
pub use outbox::{
    ENTITY_HEADER, Enqueued, Outbox, OutboxDeadLetters, OutboxSource, OutboxTable,
    PostgresOutboxConfig, VERSION_HEADER, remove_sent_once,
};
pub use postgres::{InsertStyle, PostgresTableSink, PostgresWriter, postgres_pool};
pub use query_totals::QueryTotals;
pub use settled::{SettledPosition, TrackSettled};
pub use spec::{Column, ColumnType, Ident, SqlValue, TableSpec, ValueSource, WriteMode, row_of};
pub use sqlgen::{Dialect, create_table, insert, insert_unnest, rows_per_statement};
pub use sqlite::{SqliteTableSink, SqliteWriter, sqlite_pool};
pub use table::{OffsetUpdate, RowWriter, SPLIT_BUDGET, TableSink};
pub use totals::{Aggregate, AggregateKind, TotalsSpec, TotalsTableConfig};
pub use totals_seed::{SEEDED_TABLE, Seeded, seed_once};
pub use url::{DatabaseUrl, redact_url};
