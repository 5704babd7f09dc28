//! Deleting sent outbox rows once they are older than the retention period.

use std::time::Duration;

use sqlx::PgPool;

use crate::outbox::table::OutboxTable;

/// Rows deleted per statement, so a large backlog of sent rows never holds long locks.
const DELETE_CHUNK: i64 = 5000;

/// Deletes the rows of `table` sent more than `retention` ago; returns how many.
pub async fn remove_sent_once(
    pool: &PgPool,
    table: &OutboxTable,
    retention: Duration,
) -> Result<u64, sqlx::Error> {
    let t = table.messages();
    let sql = format!(
        "DELETE FROM {t} WHERE id IN (SELECT id FROM {t} \
         WHERE sent_at IS NOT NULL AND sent_at < now() - make_interval(secs => $1) \
         LIMIT $2 FOR UPDATE SKIP LOCKED)"
    );
    let mut removed = 0;
    loop {
        let n = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(retention.as_secs_f64())
            .bind(DELETE_CHUNK)
            .execute(pool)
            .await?
            .rows_affected();
        removed += n;
        if n < DELETE_CHUNK as u64 {
            return Ok(removed);
        }
    }
}

/// Runs [`remove_sent_once`] every `every`, forever (errors are logged and tried again).
pub async fn remove_sent(pool: PgPool, table: OutboxTable, retention: Duration, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match remove_sent_once(&pool, &table, retention).await {
            Ok(0) => {}
            Ok(n) => {
                metrics::counter!("riverbed_outbox_removed_total").increment(n);
                tracing::info!(table = %table.name(), rows = n, "Sent outbox rows past retention removed");
            }
            Err(e) => {
                tracing::warn!(table = %table.name(), error = %e, "Removing sent outbox rows failed");
            }
        }
    }
}
