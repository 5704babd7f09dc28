//! A singleton lease on PostgreSQL: a session-level advisory lock held on a dedicated
//! connection. The instance that holds it consumes; the others stand by and try again.
//!
//! PostgreSQL releases the lock the moment the holder's session ends (a crash closes its
//! socket), so a standby takes over within one poll. A holder that can no longer check its
//! session (connection lost, checks late) must assume the lock is gone and stop at once;
//! standbys wait [`PgLease::takeover_delay`] after acquiring before they consume, which is
//! longer than the holder needs to notice and stop.

use std::time::Duration;

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};

use crate::connection::PostgresConnectionConfig;
use crate::error::{Error, Result};

/// A singleton lease: an advisory lock named `name`.
pub struct PgLease {
    options: PgConnectOptions,
    name: String,
    check_every: Duration,
    held: Option<PgConnection>,
}

impl PgLease {
    /// The lease `name` in the database of `connection`, checked every `check_every`.
    pub fn new(
        connection: &PostgresConnectionConfig,
        name: &str,
        check_every: Duration,
    ) -> Result<Self> {
        let options: PgConnectOptions = connection
            .url
            .expose()
            .parse()
            .map_err(|e| Error::Config(format!("url {}: {e}", connection.url)))?;
        Ok(PgLease {
            options: options.application_name(&format!("riverbed lease {name}")),
            name: name.to_owned(),
            check_every,
            held: None,
        })
    }

    /// How long a new holder waits before it consumes: a former holder that lost its
    /// connection notices within two checks and stops at once.
    pub fn takeover_delay(&self) -> Duration {
        self.check_every * 3
    }

    /// Tries once to take the lease; true when this instance holds it now.
    pub async fn try_acquire(&mut self) -> Result<bool> {
        if self.held.is_some() {
            return Ok(true);
        }
        let mut conn = tokio::time::timeout(
            self.check_every.max(Duration::from_secs(1)) * 5,
            PgConnection::connect_with(&self.options),
        )
        .await
        .map_err(|_| Error::Config("connecting for the lease timed out".into()))??;
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
            .bind(&self.name)
            .fetch_one(&mut conn)
            .await?;
        if got {
            self.held = Some(conn);
        } else {
            let _ = conn.close().await;
        }
        Ok(got)
    }

    /// Completes when the lease can no longer be trusted: its session failed a check or did
    /// not answer within `check_every`. Returns why.
    pub async fn lost(&mut self) -> String {
        let Some(conn) = self.held.as_mut() else {
            return "the lease is not held".into();
        };
        loop {
            tokio::time::sleep(self.check_every).await;
            let check = sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&mut *conn);
            match tokio::time::timeout(self.check_every, check).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return format!("lease session failed: {e}"),
                Err(_) => return "lease session did not answer in time".into(),
            }
        }
    }
}
