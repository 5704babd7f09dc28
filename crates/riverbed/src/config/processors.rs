//! The `[[processors]]` entries as written: the steps that run in every partition.

use serde::Deserialize;
use toml::Spanned;

/// One `[[processors]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessorEntry {
    /// The step's name (in dead letters and logs); defaults to its kind.
    pub name: Option<String>,
    /// What the step does.
    pub kind: ProcessorKind,
}

/// The processor kinds.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessorKind {
    /// Running count/sum/min/max/mean of a numeric field per key, emitted on a stream.
    Aggregate(AggregateSection),
    /// Keep (or drop) messages by a field's value.
    Filter(FilterSection),
}

/// `kind = "aggregate"`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregateSection {
    /// JSON pointer to the number aggregated.
    pub field: Spanned<String>,
    /// The stream the snapshots are emitted on.
    pub output: String,
    /// A SQL sink whose table holds earlier snapshots (columns mapped from /key, /count, /sum,
    /// /min, /max, /last_position): the state is restored from it at start, so a restart
    /// neither loses nor double-counts.
    pub restore_from: Option<Spanned<String>>,
    /// JSON pointer to an unsigned integer that grows per key in delivery order (a sequence
    /// number), used as the message's position instead of the source's. A source without
    /// positions (a RabbitMQ queue) then has its redeliveries recognised after a restore: a
    /// message at or before its key's `last_position` is not counted again. Default: the
    /// source's position (an embedded log's offset, a stream's offset), if any.
    pub position_from: Option<Spanned<String>>,
}

/// `kind = "filter"`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterSection {
    /// JSON pointer to the field tested.
    pub field: Spanned<String>,
    /// Keep messages whose field equals one of these (any value if empty: the field exists).
    #[serde(default)]
    pub equals: Vec<serde_json::Value>,
    /// Drop the matching messages instead of keeping them.
    #[serde(default)]
    pub negate: bool,
}
