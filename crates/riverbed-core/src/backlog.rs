//! Consumer lag: how many messages wait at the source, as the broker tells it (a RabbitMQ
//! queue's ready messages, a JetStream consumer's pending count). Connectors that can ask
//! implement [`BacklogProbe`]; the daemon asks every few seconds and exports the answers as
//! `riverbed_source_backlog_messages`.

use async_trait::async_trait;

/// What waits in one place at the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backlog {
    /// The queue or consumer, as the broker names it.
    pub name: String,
    /// Messages waiting there, not yet delivered to this consumer.
    pub messages: u64,
}

/// Asks the broker what waits at a source. Opens its own connection (never the consuming one),
/// so asking can neither slow nor disturb consumption.
#[async_trait]
pub trait BacklogProbe: Send + Sync {
    /// One entry per consumed queue or consumer; an error says why the broker could not tell
    /// (it holds no credential).
    async fn backlog(&self) -> Result<Vec<Backlog>, String>;
}
