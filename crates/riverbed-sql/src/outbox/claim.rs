//! Claiming outbox rows: per entity, its oldest unsent row and the ones after it, locked in a
//! transaction that stays open until the pipeline has settled them.
//!
//! Why row locks and not a lease: a lock lives exactly as long as the claiming session, so a
//! relay that dies (SIGKILL, lost connection) releases its rows the moment PostgreSQL notices,
//! with no expiry to tune and no clock to trust, and a slow relay can never find its rows
//! taken by another while it still publishes them (a lease that expires mid-publish would
//! let a second relay publish the entity's next rows first). The cost is one open transaction
//! (one connection) per claim, bounded by `max_claims`.
//!
//! Why no cursor: a relay never remembers "the last id seen". Every claim looks at all unsent
//! rows, so a row whose transaction commits after one with a higher id is claimed as soon as
//! it is visible; per-entity order comes from the versions, which the producers' counter row
//! lock hands out in commit order.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use riverbed_core::{Headers, Message, Metadata};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Postgres, Row, Transaction};

use crate::outbox::table::OutboxTable;

/// The header carrying the entity (also the message key).
pub const ENTITY_HEADER: &str = "riverbed-entity";
/// The header carrying the entity's version.
pub const VERSION_HEADER: &str = "riverbed-version";

/// The SQL of one outbox's claims.
#[derive(Debug, Clone)]
pub struct ClaimSql {
    heads: String,
    rows: String,
    mark: String,
}

impl ClaimSql {
    /// The statements for `table`.
    pub fn new(table: &OutboxTable) -> Self {
        let t = table.messages();
        ClaimSql {
            // The oldest unsent row of each entity, skipping entities another claim holds.
            // An entity whose head is locked is skipped whole: its later rows are not heads.
            heads: format!(
                "SELECT o.entity, o.version FROM {t} o \
                 WHERE o.sent_at IS NULL AND NOT EXISTS (\
                   SELECT 1 FROM {t} p WHERE p.entity = o.entity AND p.sent_at IS NULL \
                   AND p.version < o.version) \
                 ORDER BY o.id LIMIT $1 FOR UPDATE OF o SKIP LOCKED"
            ),
            // The heads and up to $3 - 1 rows after each; versions have no gaps, and the
            // later rows of a held head are never locked by anyone else.
            rows: format!(
                "SELECT o.id, o.entity, o.version, o.message_id, o.payload, o.headers::text, \
                   (extract(epoch FROM o.created_at) * 1000)::bigint \
                 FROM {t} o JOIN unnest($1::text[], $2::bigint[]) WITH ORDINALITY \
                   AS h(entity, version, n) \
                   ON o.entity = h.entity AND o.version >= h.version AND o.version < h.version + $3 \
                 WHERE o.sent_at IS NULL ORDER BY h.n, o.version FOR UPDATE OF o"
            ),
            mark: format!("UPDATE {t} SET sent_at = now() WHERE id = ANY($1)"),
        }
    }
}

/// One claimed row, as the pipeline receives it.
#[derive(Debug, Clone)]
pub struct ClaimedRow {
    /// The row id (the delivery token).
    pub id: i64,
    /// The entity (the message key).
    pub entity: String,
    /// The message.
    pub message: Message,
}

/// Rows locked by one open transaction.
pub struct Claim {
    /// The transaction holding the locks; committing it with the sent marks ends the claim.
    pub tx: Transaction<'static, Postgres>,
    /// The rows, each entity's in version order.
    pub rows: Vec<ClaimedRow>,
}

/// Claims up to `max` rows; `None` (and the transaction rolled back) when none is claimable.
pub async fn claim(
    pool: &PgPool,
    sql: &ClaimSql,
    max: usize,
) -> Result<Option<Claim>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let limit = i64::try_from(max).unwrap_or(i64::MAX);
    let heads = sqlx::query(sqlx::AssertSqlSafe(sql.heads.as_str()))
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
    if heads.is_empty() {
        tx.rollback().await?;
        return Ok(None);
    }
    let mut entities = Vec::with_capacity(heads.len());
    let mut versions = Vec::with_capacity(heads.len());
    for h in &heads {
        entities.push(h.try_get::<String, _>(0)?);
        versions.push(h.try_get::<i64, _>(1)?);
    }
    let per_entity = (max / heads.len()).max(1) as i64;
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql.rows.as_str()))
        .bind(&entities)
        .bind(&versions)
        .bind(per_entity)
        .fetch_all(&mut *tx)
        .await?;
    let rows = rows
        .iter()
        .map(claimed_row)
        .collect::<Result<Vec<_>, _>>()?;
    metrics::counter!("riverbed_outbox_claimed_total").increment(rows.len() as u64);
    Ok(Some(Claim { tx, rows }))
}

fn claimed_row(r: &PgRow) -> Result<ClaimedRow, sqlx::Error> {
    let id: i64 = r.try_get(0)?;
    let entity: String = r.try_get(1)?;
    let version: i64 = r.try_get(2)?;
    let payload: Vec<u8> = r.try_get(4)?;
    let headers: String = r.try_get(5)?;
    let created_ms: i64 = r.try_get(6)?;
    let mut headers: Headers = serde_json::from_str(&headers).unwrap_or_else(|e| {
        tracing::warn!(id, error = %e, "Outbox row headers are not an object of scalars; sent without them");
        Headers::new()
    });
    headers.insert(ENTITY_HEADER.into(), entity.clone().into());
    headers.insert(VERSION_HEADER.into(), version.into());
    let meta = Metadata {
        message_id: Some(r.try_get(3)?),
        position: u64::try_from(id).ok(),
        timestamp: u64::try_from(created_ms)
            .ok()
            .map(|ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms)),
        ..Metadata::default()
    };
    let mut message = Message::new(Bytes::from(payload));
    message.key = Some(entity.clone());
    message.headers = headers;
    message.meta = meta;
    Ok(ClaimedRow {
        id,
        entity,
        message,
    })
}

/// Marks `ids` sent and commits, which releases the claim's locks. Rows not in `ids` stay
/// unsent and are claimed again.
pub async fn finish(
    mut tx: Transaction<'static, Postgres>,
    sql: &ClaimSql,
    ids: &[i64],
) -> Result<(), sqlx::Error> {
    if !ids.is_empty() {
        sqlx::query(sqlx::AssertSqlSafe(sql.mark.as_str()))
            .bind(ids)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await
}
