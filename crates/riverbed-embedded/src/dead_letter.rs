//! The embedded log's dead-letter table: store, list, and redrive back into the topic.

use std::sync::Arc;

use async_trait::async_trait;
use riverbed_core::{DeadLetter, DeadLetterSink, Failure};
use sqlx::Row;
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

/// Lists up to `limit` dead letters of `topic` (all topics if `None`), oldest first.
pub async fn list_dead_letters(
    log: &EmbeddedLog,
    topic: Option<&str>,
    limit: i64,
) -> Result<Vec<StoredDeadLetter>> {
    let rows = sqlx::query(
        "SELECT id, topic, log_offset, message_id, key, payload, headers, reason, error, attempts,
                stage, first_failure_ms, last_failure_ms
         FROM dead_letters WHERE (?1 IS NULL OR topic = ?1) ORDER BY id LIMIT ?2",
    )
    .bind(topic)
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
    let (reply, rx) = oneshot::channel();
    log.send(Command::Redrive {
        topic: topic.into(),
        ids,
        reply,
    })
    .await?;
    rx.await.map_err(|_| Error::Closed)?
}
