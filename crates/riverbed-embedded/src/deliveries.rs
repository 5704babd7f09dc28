//! Deliveries recorded before they are handed out, so a restart knows how often each unsettled
//! message was delivered (poison-pill protection counts across crashes).
//!
//! A consumer's `positions.delivered` is raised past the last offset of a read (reserved a
//! few thousand offsets ahead) before the read is handed out; every offset at or below it and
//! above `committed` counts as a redelivery after a crash. Their counts live in `deliveries` (one row per redelivered offset, 2 on its first
//! redelivery) and are deleted once the committed position passes them.

use sqlx::SqliteConnection;

use crate::error::Result;

/// The table of delivery counts of redelivered offsets.
pub(crate) const DELIVERIES_TABLE: &str = "CREATE TABLE IF NOT EXISTS deliveries (
    consumer TEXT NOT NULL,
    topic TEXT NOT NULL,
    offset INTEGER NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (consumer, topic, offset)
) WITHOUT ROWID";

/// Records that `consumer` hands out offsets up to `upto`, counts one more delivery of each of
/// `redelivered`, and returns their counts (in the same order).
pub(crate) async fn record(
    conn: &mut SqliteConnection,
    consumer: &str,
    topic: &str,
    upto: u64,
    redelivered: &[u64],
    now: i64,
) -> Result<Vec<u32>> {
    sqlx::query(
        "INSERT INTO positions (consumer, topic, committed, delivered, updated_at_ms)
         VALUES (?, ?, 0, ?, ?)
         ON CONFLICT (consumer, topic) DO UPDATE SET
           delivered = max(delivered, excluded.delivered),
           updated_at_ms = excluded.updated_at_ms",
    )
    .bind(consumer)
    .bind(topic)
    .bind(upto as i64)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    let mut counts = Vec::with_capacity(redelivered.len());
    for &offset in redelivered {
        let count: i64 = sqlx::query_scalar(
            "INSERT INTO deliveries (consumer, topic, offset, count) VALUES (?, ?, ?, 2)
             ON CONFLICT (consumer, topic, offset) DO UPDATE SET count = count + 1
             RETURNING count",
        )
        .bind(consumer)
        .bind(topic)
        .bind(offset as i64)
        .fetch_one(&mut *conn)
        .await?;
        counts.push(u32::try_from(count).unwrap_or(u32::MAX));
    }
    Ok(counts)
}

/// Forgets the counts of offsets at or below the committed position.
pub(crate) async fn forget_settled(
    conn: &mut SqliteConnection,
    consumer: &str,
    topic: &str,
    committed: u64,
) -> Result<()> {
    sqlx::query("DELETE FROM deliveries WHERE consumer = ? AND topic = ? AND offset <= ?")
        .bind(consumer)
        .bind(topic)
        .bind(committed as i64)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
