//! Totals read from PostgreSQL by a query ([`QueryTotals`]), for a destination that publishes
//! them (the Redis window counter, joined to it by the daemon through
//! [`riverbed_core::TotalsSource`]).
//!
//! The query's first column is the group, every further column one total named by its alias:
//! `SELECT provider, count, sum FROM provider_totals` reads a totals table kept by the sink
//! (see the `totals` module: cost independent of the history's size), and `SELECT provider,
//! count(*) AS count, sum(amount) AS sum FROM historical_transactions GROUP BY provider` scans
//! the history (no maintenance, but its cost grows with the table).

use async_trait::async_trait;
use riverbed_core::{GroupTotals, TotalsError, TotalsSnapshot, TotalsSource};
use sqlx::postgres::PgPool;
use sqlx::{Column, Row};

use crate::error::Error;

/// A totals query on a pool.
#[derive(Clone)]
pub struct QueryTotals {
    pool: PgPool,
    query: String,
}

impl QueryTotals {
    /// Totals of `query` (first column the group, others the totals) on `pool`.
    pub fn new(pool: PgPool, query: &str) -> Self {
        QueryTotals {
            pool,
            query: query.to_owned(),
        }
    }

    /// Runs the query. Values are read in PostgreSQL's text form (simple query protocol), so
    /// `numeric` sums keep every digit. Rows with a NULL group are counted, not returned.
    pub async fn snapshot(&self) -> Result<TotalsSnapshot, Error> {
        let rows = sqlx::raw_sql(sqlx::AssertSqlSafe(self.query.clone()))
            .fetch_all(&self.pool)
            .await?;
        let mut out = TotalsSnapshot::default();
        for row in rows {
            if row.columns().len() < 2 {
                return Err(Error::Config(
                    "the totals query needs a group column and at least one total".into(),
                ));
            }
            let Some(group) = row.try_get_unchecked::<Option<String>, _>(0)? else {
                out.null_groups += 1;
                continue;
            };
            let mut values = Vec::with_capacity(row.columns().len() - 1);
            for (i, c) in row.columns().iter().enumerate().skip(1) {
                if let Some(v) = row.try_get_unchecked::<Option<String>, _>(i)? {
                    values.push((c.name().to_owned(), v));
                }
            }
            out.groups.push(GroupTotals { group, values });
        }
        Ok(out)
    }
}

#[async_trait]
impl TotalsSource for QueryTotals {
    async fn fetch(&self) -> Result<TotalsSnapshot, TotalsError> {
        self.snapshot().await.map_err(TotalsError::new)
    }
}
