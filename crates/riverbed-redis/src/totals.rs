//! Totals derived from committed data: a PostgreSQL query's groups written to Redis in one
//! `MULTI`/`EXEC` with `HSET` (absolute values, never increments), so writing them again — after
//! a crash, a restart of Redis, a retry — can never count anything twice. Startup
//! reconciliation is one such write; the window counter repeats it at every boundary.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::ConnectionManager;
use serde::Deserialize;
use sqlx::postgres::PgPool;
use sqlx::{Column, Row};

use crate::config::TotalsConfig;
use crate::error::{Error, Result};

/// How totals are laid out in Redis. Either way `<prefix>@as_of_ms` holds the instant (epoch
/// milliseconds) the totals were taken for.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum TotalsLayout {
    /// One hash per group, `<prefix><group>`, with one field per total: `totals:acme` ->
    /// `{count: 12, sum: 1234.50}`.
    HashPerGroup {
        /// Key prefix.
        prefix: String,
    },
    /// One hash per total, `<prefix><total>`, with one field per group: `sum` -> `{acme:
    /// 1234.50, ...}` (the layout of a `hash_incr` counter keyed by group).
    HashPerTotal {
        /// Key prefix.
        prefix: String,
    },
}

impl Default for TotalsLayout {
    fn default() -> Self {
        TotalsLayout::HashPerGroup {
            prefix: "totals:".into(),
        }
    }
}

impl TotalsLayout {
    fn prefix(&self) -> &str {
        match self {
            TotalsLayout::HashPerGroup { prefix } | TotalsLayout::HashPerTotal { prefix } => prefix,
        }
    }

    /// The key holding the instant the totals were taken for.
    pub fn as_of_key(&self) -> String {
        format!("{}@as_of_ms", self.prefix())
    }
}

/// One group's totals, as the database printed them (exact decimals stay exact).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupTotals {
    /// The group (first column).
    pub group: String,
    /// `(column alias, value)` for every further column; NULLs are left out.
    pub values: Vec<(String, String)>,
}

/// A totals query and where its result goes.
#[derive(Clone)]
pub struct Totals {
    pool: PgPool,
    conn: ConnectionManager,
    query: String,
    layout: TotalsLayout,
}

impl Totals {
    /// Totals of `query` (first column the group, others the totals) on `pool`, written to
    /// `conn` in `layout`.
    pub fn new(pool: PgPool, conn: ConnectionManager, query: &str, layout: TotalsLayout) -> Self {
        Totals {
            pool,
            conn,
            query: query.to_owned(),
            layout,
        }
    }

    /// Connects to both ends.
    pub async fn from_config(c: &TotalsConfig) -> Result<Self> {
        Ok(Totals::new(
            c.postgres.connect().await?,
            c.redis.connect().await?,
            &c.query,
            c.layout.clone(),
        ))
    }

    /// The layout.
    pub fn layout(&self) -> &TotalsLayout {
        &self.layout
    }

    /// Runs the query. Values are read in PostgreSQL's text form (simple query protocol), so
    /// `numeric` sums keep every digit.
    pub async fn fetch(&self) -> Result<Vec<GroupTotals>> {
        let rows = sqlx::raw_sql(sqlx::AssertSqlSafe(self.query.clone()))
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            if row.columns().len() < 2 {
                return Err(Error::Config(
                    "the totals query needs a group column and at least one total".into(),
                ));
            }
            let Some(group) = row.try_get_unchecked::<Option<String>, _>(0)? else {
                continue;
            };
            let mut values = Vec::with_capacity(row.columns().len() - 1);
            for (i, c) in row.columns().iter().enumerate().skip(1) {
                if let Some(v) = row.try_get_unchecked::<Option<String>, _>(i)? {
                    values.push((c.name().to_owned(), v));
                }
            }
            out.push(GroupTotals { group, values });
        }
        Ok(out)
    }

    /// Writes `totals` taken for `as_of` in one `MULTI`/`EXEC`.
    pub async fn write(&self, totals: &[GroupTotals], as_of: SystemTime) -> Result<()> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        let prefix = self.layout.prefix();
        for g in totals {
            for (name, value) in &g.values {
                let (key, field) = match &self.layout {
                    TotalsLayout::HashPerGroup { .. } => (format!("{prefix}{}", g.group), name),
                    TotalsLayout::HashPerTotal { .. } => (format!("{prefix}{name}"), &g.group),
                };
                pipe.hset(key, field, value).ignore();
            }
        }
        pipe.set(self.layout.as_of_key(), epoch_ms(as_of)).ignore();
        let mut conn = self.conn.clone();
        pipe.query_async::<()>(&mut conn).await?;
        Ok(())
    }

    /// Fetches and writes; returns how many groups were written.
    pub async fn sync(&self, as_of: SystemTime) -> Result<usize> {
        let totals = self.fetch().await?;
        self.write(&totals, as_of).await?;
        Ok(totals.len())
    }
}

/// Startup reconciliation: writes the current totals of committed data to Redis before the
/// pipeline consumes anything. Returns how many groups were written.
pub async fn reconcile(c: &TotalsConfig) -> Result<usize> {
    let totals = Totals::from_config(c).await?;
    let groups = totals.sync(SystemTime::now()).await?;
    tracing::info!(groups, "Counters reconciled from committed data");
    Ok(groups)
}

/// Milliseconds since the Unix epoch.
pub fn epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_parse_and_refuse_unknown_fields() {
        #[derive(Deserialize)]
        struct W {
            layout: TotalsLayout,
        }
        let w: W =
            toml::from_str("layout = { type = \"hash_per_total\", prefix = \"agg:\" }").unwrap();
        assert_eq!(w.layout.as_of_key(), "agg:@as_of_ms");
        assert!(
            toml::from_str::<W>("layout = { type = \"hash_per_group\", prefx = \"x\" }").is_err()
        );
    }
}
