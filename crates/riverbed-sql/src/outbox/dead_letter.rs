//! The outbox's own dead-letter table, `<table>_dead_letters`: rows the sinks refused for good.

use std::time::SystemTime;

use async_trait::async_trait;
use riverbed_core::{DeadLetter, DeadLetterSink, Failure};
use sqlx::PgPool;

use crate::outbox::claim::VERSION_HEADER;
use crate::outbox::table::OutboxTable;

/// Stores dead letters of outbox messages, in one transaction per group.
pub struct OutboxDeadLetters {
    pool: PgPool,
    table: String,
    sql: String,
}

impl OutboxDeadLetters {
    /// Dead letters of `table`, in `<table>_dead_letters`.
    pub fn new(pool: PgPool, table: &OutboxTable) -> Self {
        let sql = format!(
            "INSERT INTO {} (outbox_id, entity, version, message_id, payload, headers, reason, \
             error, stage, attempts, first_failure, last_failure) VALUES ($1, $2, $3, $4, $5, \
             $6::jsonb, $7, $8, $9, $10, to_timestamp($11), to_timestamp($12))",
            table.dead_letters()
        );
        OutboxDeadLetters {
            pool,
            table: table.dead_letters(),
            sql,
        }
    }
}

fn epoch(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[async_trait]
impl DeadLetterSink for OutboxDeadLetters {
    fn describe(&self) -> String {
        format!("outbox dead-letter table {}", self.table)
    }

    async fn write(&self, letters: &[DeadLetter]) -> Result<(), Failure> {
        let stored = async {
            let mut tx = self.pool.begin().await?;
            for l in letters {
                let m = &l.message;
                let headers = serde_json::to_string(&m.headers).unwrap_or_else(|_| "{}".into());
                let version = m.headers.get(VERSION_HEADER).and_then(|v| v.as_i64());
                sqlx::query(sqlx::AssertSqlSafe(self.sql.as_str()))
                    .bind(m.meta.position.map(|p| p as i64).unwrap_or(0))
                    .bind(m.key.as_deref().unwrap_or(""))
                    .bind(version.unwrap_or(0))
                    .bind(m.meta.message_id.as_deref().unwrap_or(""))
                    .bind(m.payload.as_ref())
                    .bind(headers)
                    .bind(&l.reason)
                    .bind(&l.error)
                    .bind(&l.stage)
                    .bind(i32::try_from(l.attempts).unwrap_or(i32::MAX))
                    .bind(epoch(l.first_failure))
                    .bind(epoch(l.last_failure))
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await
        };
        stored
            .await
            .map_err(|e: sqlx::Error| Failure::unavailable(e.to_string()))
    }
}
