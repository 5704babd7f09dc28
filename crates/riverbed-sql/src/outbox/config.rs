//! TOML configuration of the outbox relay source (`kind = "postgres_outbox"`).

use std::time::Duration;

use serde::Deserialize;

use crate::connection::PostgresConnectionConfig;
use crate::error::{Error, Result};
use crate::outbox::table::OutboxTable;

/// The outbox relay: claims unsent outbox rows, hands them to the pipeline, marks them sent
/// once every sink has settled them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresOutboxConfig {
    /// The database holding the outbox. `max_connections` must be at least `max_claims` + 2
    /// (+ 1 without `listen`): each open claim holds one connection until its rows are
    /// settled, `LISTEN` holds one, cleanup and dead letters use one.
    pub connection: PostgresConnectionConfig,
    /// The outbox table (also `<table>_versions`, `<table>_dead_letters`, and the `NOTIFY`
    /// channel `<table>`).
    #[serde(default = "default_table")]
    pub table: String,
    /// Create the outbox tables at start if they do not exist.
    #[serde(default = "default_true")]
    pub create_table: bool,
    /// Most rows one claim takes (also bounded by the pipeline's free in-flight slots).
    #[serde(default = "default_claim_size")]
    pub claim_size: usize,
    /// Most claims (transactions holding row locks) open at once in this instance.
    #[serde(default = "default_max_claims")]
    pub max_claims: usize,
    /// Wake up on the producers' `NOTIFY` (true), or only poll.
    #[serde(default = "default_true")]
    pub listen: bool,
    /// How often to look for rows without a notification (the fallback when a notification
    /// is lost, e.g. while the listening connection reconnects, or when producers do not
    /// notify).
    #[serde(default = "default_poll", with = "humantime_serde")]
    pub poll_interval: Duration,
    /// How long sent rows are kept before they are deleted.
    #[serde(default = "default_retention", with = "humantime_serde")]
    pub retention: Duration,
    /// How often sent rows older than `retention` are deleted.
    #[serde(default = "default_cleanup", with = "humantime_serde")]
    pub cleanup_interval: Duration,
}

fn default_table() -> String {
    "riverbed_outbox".into()
}
fn default_true() -> bool {
    true
}
fn default_claim_size() -> usize {
    500
}
fn default_max_claims() -> usize {
    4
}
fn default_poll() -> Duration {
    Duration::from_secs(1)
}
fn default_retention() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_cleanup() -> Duration {
    Duration::from_secs(60)
}

impl PostgresOutboxConfig {
    /// A configuration with every default, for the outbox in the database of `connection`.
    pub fn new(connection: PostgresConnectionConfig) -> Self {
        PostgresOutboxConfig {
            connection,
            table: default_table(),
            create_table: true,
            claim_size: default_claim_size(),
            max_claims: default_max_claims(),
            listen: true,
            poll_interval: default_poll(),
            retention: default_retention(),
            cleanup_interval: default_cleanup(),
        }
    }

    /// Checks every field; the error names the one at fault.
    pub fn check(&self) -> Result<OutboxTable> {
        let table = OutboxTable::new(&self.table)?;
        let zero = |field: &str| Err(Error::Config(format!("`{field}` must be more than 0")));
        if self.claim_size == 0 {
            return zero("claim_size");
        }
        if self.max_claims == 0 {
            return zero("max_claims");
        }
        if self.poll_interval.is_zero() {
            return zero("poll_interval");
        }
        if self.cleanup_interval.is_zero() {
            return zero("cleanup_interval");
        }
        let needed = self.max_claims + usize::from(self.listen) + 1;
        if (self.connection.max_connections as usize) < needed {
            return Err(Error::Config(format!(
                "`connection.max_connections` ({}) must be at least {needed}: each of the \
                 `max_claims` ({}) open claims holds a connection{}, and cleanup and dead \
                 letters need one more",
                self.connection.max_connections,
                self.max_claims,
                if self.listen {
                    ", LISTEN holds one"
                } else {
                    ""
                }
            )));
        }
        self.connection.options()?;
        Ok(table)
    }
}
