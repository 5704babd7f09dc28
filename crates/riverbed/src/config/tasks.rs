//! The tasks beside a pipeline that join two connectors: totals read from PostgreSQL (a
//! totals table the append sink keeps, or a `GROUP BY` query) and written to Redis, at every
//! boundary (`window_counter`) or once at start (`reconcile`). The connectors do not know each
//! other: the SQL side is a [`riverbed_core::TotalsSource`] handed to the Redis side here.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use riverbed_redis::{RedisConfig, Totals, TotalsLayout, WindowCounter};
use riverbed_sql::{PostgresConnectionConfig, QueryTotals};
use serde::Deserialize;

/// `kind = "window_counter"`: totals written to Redis at every wall-clock-aligned boundary,
/// and once at start before consuming (startup reconciliation).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowCounterSection {
    /// Where the committed data is.
    pub postgres: PostgresConnectionConfig,
    /// Where the totals go.
    pub redis: RedisConfig,
    /// The query: first column the group (e.g. provider), each further column one total
    /// named by its alias. Reading a totals table the sink keeps (`SELECT provider, count,
    /// sum FROM provider_totals`) costs the same at any history size; `SELECT provider,
    /// count(*) AS count, sum(amount) AS sum FROM historical_transactions GROUP BY provider`
    /// scans the whole history at every boundary.
    pub query: String,
    /// How totals are laid out in Redis.
    #[serde(default)]
    pub layout: TotalsLayout,
    /// Boundaries are the multiples of this since the Unix epoch (every full minute by
    /// default).
    #[serde(default = "default_every", with = "humantime_serde")]
    pub every: Duration,
}

fn default_every() -> Duration {
    riverbed_redis::DEFAULT_EVERY
}

/// `kind = "reconcile"`: totals written to Redis once, before consuming.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcileSection {
    /// Where the committed data is.
    pub postgres: PostgresConnectionConfig,
    /// Where the totals go.
    pub redis: RedisConfig,
    /// The query (see [`WindowCounterSection::query`]).
    pub query: String,
    /// How totals are laid out in Redis.
    #[serde(default)]
    pub layout: TotalsLayout,
}

/// Connects both ends: the query on its own PostgreSQL pool as the source, Redis as the
/// destination.
async fn totals(
    postgres: &PostgresConnectionConfig,
    redis: &RedisConfig,
    query: &str,
    layout: &TotalsLayout,
) -> Result<Totals> {
    let pool = postgres.connect().await?;
    let source = Arc::new(QueryTotals::new(pool, query));
    Ok(Totals::new(source, redis.connect().await?, layout.clone()))
}

impl WindowCounterSection {
    /// Connects and builds the counter named `name`.
    pub async fn counter(&self, name: &str) -> Result<WindowCounter> {
        let t = totals(&self.postgres, &self.redis, &self.query, &self.layout).await?;
        WindowCounter::new(name, t, self.every).context("window counter")
    }
}

impl ReconcileSection {
    /// Connects and writes the totals once; returns how many groups were written.
    pub async fn run(&self) -> Result<usize> {
        let t = totals(&self.postgres, &self.redis, &self.query, &self.layout).await?;
        Ok(riverbed_redis::reconcile(&t).await?)
    }
}
