//! How to reach PostgreSQL: URL (password redacted), pool size, timeouts, application name.

use std::time::Duration;

use serde::Deserialize;
use sqlx::postgres::{PgConnectOptions, PgPool};

use crate::error::{Error, Result};
use crate::postgres::postgres_pool;
use crate::url::DatabaseUrl;

/// How to reach PostgreSQL.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConnectionConfig {
    /// Connection URL, `postgres://user:password@host:5432/db` (the password never appears
    /// in logs).
    pub url: DatabaseUrl,
    /// Most connections the pool opens.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// How long to wait for a free or new connection before the write fails transiently.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Every statement is cancelled after this long (a transient failure, retried).
    #[serde(default = "default_statement_timeout", with = "humantime_serde")]
    pub statement_timeout: Duration,
    /// The name these connections show in `pg_stat_activity`.
    #[serde(default = "default_application_name")]
    pub application_name: String,
}

fn default_application_name() -> String {
    "riverbed".into()
}

fn default_max_connections() -> u32 {
    8
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_statement_timeout() -> Duration {
    Duration::from_secs(30)
}

impl PostgresConnectionConfig {
    /// Opens the pool.
    pub async fn connect(&self) -> Result<PgPool> {
        let options: PgConnectOptions = self
            .url
            .expose()
            .parse()
            .map_err(|e| Error::Config(format!("url {}: {e}", self.url)))?;
        Ok(postgres_pool(
            options.application_name(&self.application_name),
            self.max_connections,
            self.connect_timeout,
            self.statement_timeout,
        )
        .await?)
    }
}
