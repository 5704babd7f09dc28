//! The feed state table in PostgreSQL: per producer, the last good alive whose earlier messages
//! are committed (a restart recovers from it), and whether it is up, why, and since when. Each
//! change of state is also sent with `pg_notify('riverbed_feed', ...)` for whoever listens.

use std::collections::BTreeMap;

use anyhow::Result;
use sqlx::{PgPool, Row};

use super::FeedPlan;

/// The channel `pg_notify` sends producer state changes on (JSON payload).
pub const NOTIFY_CHANNEL: &str = "riverbed_feed";

/// The state table of one feed.
pub struct Store {
    pool: PgPool,
    feed: String,
    table: String,
}

impl Store {
    /// Connects and creates the table if needed.
    pub async fn open(plan: &FeedPlan) -> Result<Store> {
        let pool = plan.postgres.connect().await?;
        let table = plan.table.quoted();
        // Two instances starting together would race in CREATE TABLE IF NOT EXISTS (a
        // unique violation in the catalog): the first holds a lock on the name meanwhile.
        let mut tx = pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
            .bind(format!("riverbed_feed_state:{}", plan.table))
            .execute(&mut *tx)
            .await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE TABLE IF NOT EXISTS {table} (
                feed text NOT NULL,
                producer text NOT NULL,
                last_alive bigint,
                up boolean NOT NULL DEFAULT false,
                reason text,
                changed_at timestamptz,
                PRIMARY KEY (feed, producer))"
        )))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Store {
            pool,
            feed: plan.name.clone(),
            table,
        })
    }

    /// The stored last good alive of each producer that has one.
    pub async fn load(&self) -> Result<BTreeMap<String, u64>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT producer, last_alive FROM {} WHERE feed = $1 AND last_alive IS NOT NULL",
            self.table
        )))
        .bind(&self.feed)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get::<i64, _>(1)?.max(0) as u64)))
            .collect()
    }

    /// Stores good alives; a stored one is only ever raised (several instances may write).
    pub async fn save_alives(&self, alives: &BTreeMap<String, u64>) -> Result<()> {
        let (producers, stamps): (Vec<&str>, Vec<i64>) = alives
            .iter()
            .map(|(p, t)| (p.as_str(), i64::try_from(*t).unwrap_or(i64::MAX)))
            .unzip();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {t} (feed, producer, last_alive)
             SELECT $1, p, a FROM unnest($2::text[], $3::bigint[]) AS u(p, a)
             ON CONFLICT (feed, producer) DO UPDATE
             SET last_alive = GREATEST({t}.last_alive, EXCLUDED.last_alive)",
            t = self.table
        )))
        .bind(&self.feed)
        .bind(producers)
        .bind(stamps)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records a change of state and notifies listeners of [`NOTIFY_CHANNEL`].
    pub async fn save_status(&self, producer: &str, up: bool, reason: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {} (feed, producer, up, reason, changed_at) VALUES ($1, $2, $3, $4, now())
             ON CONFLICT (feed, producer) DO UPDATE
             SET up = EXCLUDED.up, reason = EXCLUDED.reason, changed_at = EXCLUDED.changed_at",
            self.table
        )))
        .bind(&self.feed)
        .bind(producer)
        .bind(up)
        .bind(reason)
        .execute(&mut *tx)
        .await?;
        let payload = serde_json::json!({
            "feed": self.feed, "producer": producer, "up": up, "reason": reason,
        });
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(NOTIFY_CHANNEL)
            .bind(payload.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}
