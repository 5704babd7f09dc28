//! Riverbed's embedded default: a durable local log on SQLite, so a pipeline can run with no
//! broker and no database server; plus a data generator and JSON-lines sinks.
//!
//! # Layout
//! - `log`: [`EmbeddedLog`], the handle: open, append, positions.
//! - `writer`: the single writer task and its group commit.
//! - `source`: [`LogSource`], a consumer that resumes at its committed position.
//! - `dead_letter`: the dead-letter table, listing, redrive and purge.
//! - `generate`: seeded synthetic sensors, orders and transactions.
//! - `file`: JSON-lines sinks and a log-only dead-letter destination.
//! - `deliveries`: delivery counts recorded before a read is handed out.
//! - `schema`: tables, connect options, encodings.

#![forbid(unsafe_code)]

mod dead_letter;
mod deliveries;
mod error;
mod file;
mod generate;
mod log;
mod schema;
mod source;
mod writer;

pub use dead_letter::{
    LogDeadLetters, Selection, StoredDeadLetter, list_dead_letters, list_selected,
    purge_dead_letters, redrive, redrive_selected,
};
pub use error::{Error, Result};
pub use file::{FileDeadLetters, JsonLinesSink, LineTarget, LogOnlyDeadLetters};
pub use generate::{CountingAcker, DataKind, GenerateSource, Generator};
pub use log::{EmbeddedLog, Position};
pub use schema::{Durability, connect_options};
pub use source::{LogAcker, LogSource};
pub use writer::Record;
