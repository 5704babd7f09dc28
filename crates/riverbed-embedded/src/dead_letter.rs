//! The embedded log's dead-letter table: store, list, redrive back into the topic, purge.

use std::sync::Arc;

use async_trait::async_trait;
use riverbed_core::{DeadLetter, DeadLetterSink, Failure};
use sqlx::{Row, SqliteConnection};
use tokio::sync::oneshot;

use crate::error::{Error, Result};
use crate::log::EmbeddedLog;
use crate::schema::{decode_headers, from_epoch_ms};
use crate::writer::Command;

/// Stores dead letters in the log's `dead_letters` table, in one transaction per group.
pub struct LogDeadLetters {
    log: EmbeddedLog,
    topic: Arc<str>,
}

impl LogDeadLetters {
    /// Dead letters of `topic` in `log`.
    pub fn new(log: &EmbeddedLog, topic: &str) -> Self {
        LogDeadLetters {
            log: log.clone(),
            topic: topic.into(),
        }
    }
}

#[async_trait]
impl DeadLetterSink for LogDeadLetters {
    fn describe(&self) -> String {
        format!("dead_letters table of {}", self.log.path().display())
    }

    async fn write(&self, letters: &[DeadLetter]) -> Result<(), Failure> {
        let (reply, rx) = oneshot::channel();
        let cmd = Command::DeadLetters {
            topic: self.topic.clone(),
            letters: letters.to_vec(),
            reply,
        };
        let stored = async {
            self.log.send(cmd).await?;
            rx.await.map_err(|_| Error::Closed)?
        };
        stored
            .await
            .map_err(|e| Failure::unavailable(e.to_string()))
    }
}

/// A stored dead letter.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredDeadLetter {
    /// Its id in the table.
    pub id: i64,
    /// The topic it came from.
    pub topic: String,
    /// The letter.
    pub letter: DeadLetter,
}

/// Which dead letters a command applies to: every condition given must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Selection {
    /// Only letters of this topic.
    pub topic: Option<String>,
    /// Only these ids.
    pub ids: Option<Vec<i64>>,
    /// Only letters with this reason.
    pub reason: Option<String>,
    /// Only letters refused by this stage (sink or processor).
    pub stage: Option<String>,
    /// Only letters whose last failure was at or after this time (ms since the Unix epoch).
    pub since_ms: Option<i64>,
}

impl Selection {
    /// Every letter of `topic`, or only `ids` of it.
    pub fn topic(topic: &str, ids: Option<Vec<i64>>) -> Self {
        Selection {
            topic: Some(topic.to_owned()),
            ids,
            ..Selection::default()
        }
    }
}

/// The SQL condition of a selection; its parameters are bound by [`bind`] as ?1 to ?5.
const SELECTED: &str = "(?1 IS NULL OR topic = ?1)
    AND (?2 IS NULL OR id IN (SELECT value FROM json_each(?2)))
    AND (?3 IS NULL OR reason = ?3) AND (?4 IS NULL OR stage = ?4)
    AND (?5 IS NULL OR last_failure_ms >= ?5)";

fn bind<'q>(
    q: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>,
    s: &'q Selection,
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments> {
    let ids = s
        .ids
        .as_ref()
        .map(|v| serde_json::to_string(v).expect("ids serialise"));
    q.bind(s.topic.as_deref())
        .bind(ids)
        .bind(s.reason.as_deref())
        .bind(s.stage.as_deref())
        .bind(s.since_ms)
}

/// Lists up to `limit` dead letters of `topic` (all topics if `None`), oldest first.
pub async fn list_dead_letters(
    log: &EmbeddedLog,
    topic: Option<&str>,
    limit: i64,
) -> Result<Vec<StoredDeadLetter>> {
    let selection = Selection {
        topic: topic.map(str::to_owned),
        ..Selection::default()
    };
    list_selected(log, &selection, limit).await
}

/// Lists up to `limit` dead letters of `selection`, oldest first.
pub async fn list_selected(
    log: &EmbeddedLog,
    selection: &Selection,
    limit: i64,
) -> Result<Vec<StoredDeadLetter>> {
    let sql = format!(
        "SELECT id, topic, log_offset, message_id, key, payload, headers, reason, error, attempts,
                stage, first_failure_ms, last_failure_ms
         FROM dead_letters WHERE {SELECTED} ORDER BY id LIMIT ?6"
    );
    let rows = bind(sqlx::query(sqlx::AssertSqlSafe(sql)), selection)
        .bind(limit)
        .fetch_all(log.readers())
        .await?;
    rows.iter()
        .map(|r| {
            let mut m = riverbed_core::Message::new(r.get::<Vec<u8>, _>("payload"));
            m.key = r.get("key");
            m.headers = decode_headers(r.get::<Option<&str>, _>("headers"))?;
            m.meta.message_id = r.get("message_id");
            m.meta.position = r.get::<Option<i64>, _>("log_offset").map(|o| o as u64);
            Ok(StoredDeadLetter {
                id: r.get("id"),
                topic: r.get("topic"),
                letter: DeadLetter {
                    message: m,
                    reason: r.get("reason"),
                    error: r.get("error"),
                    attempts: r.get::<i64, _>("attempts") as u32,
                    stage: r.get("stage"),
                    first_failure: from_epoch_ms(r.get("first_failure_ms")),
                    last_failure: from_epoch_ms(r.get("last_failure_ms")),
                },
            })
        })
        .collect()
}

/// Moves dead letters back into their topic (all of `topic`'s, or only `ids`), in one
/// transaction; returns how many were moved.
pub async fn redrive(log: &EmbeddedLog, topic: &str, ids: Option<Vec<i64>>) -> Result<u64> {
    redrive_selected(log, Selection::topic(topic, ids)).await
}

/// Moves the letters of `selection` back into the topics they came from, in one transaction
/// (all or none); returns how many were moved.
pub async fn redrive_selected(log: &EmbeddedLog, selection: Selection) -> Result<u64> {
    let (reply, rx) = oneshot::channel();
    log.send(Command::Redrive { selection, reply }).await?;
    rx.await.map_err(|_| Error::Closed)?
}

/// Deletes the letters of `selection`, in one transaction; returns how many were deleted.
pub async fn purge_dead_letters(log: &EmbeddedLog, selection: Selection) -> Result<u64> {
    let (reply, rx) = oneshot::channel();
    log.send(Command::Purge { selection, reply }).await?;
    rx.await.map_err(|_| Error::Closed)?
}

/// The writer's half of a redrive: appends the selected letters to their topics (with their
/// key, payload, headers and message id), oldest first, and deletes them.
pub(crate) async fn move_back(
    conn: &mut SqliteConnection,
    selection: &Selection,
    now: i64,
) -> Result<u64> {
    let insert = format!(
        "INSERT INTO log (topic, key, payload, headers, appended_at_ms, message_id)
         SELECT topic, key, payload, headers, ?6, message_id FROM dead_letters
         WHERE {SELECTED} ORDER BY id"
    );
    let moved = bind(sqlx::query(sqlx::AssertSqlSafe(insert)), selection)
        .bind(now)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    delete(conn, selection).await?;
    Ok(moved)
}

/// The writer's half of a purge.
pub(crate) async fn delete(conn: &mut SqliteConnection, selection: &Selection) -> Result<u64> {
    let sql = format!("DELETE FROM dead_letters WHERE {SELECTED}");
    Ok(bind(sqlx::query(sqlx::AssertSqlSafe(sql)), selection)
        .execute(&mut *conn)
        .await?
        .rows_affected())
}
