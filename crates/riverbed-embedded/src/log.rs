//! The embedded log handle: open, append, read, positions and dead letters.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use riverbed_core::{Message, Metadata};
use sqlx::sqlite::{SqlitePool, SqlitePoolOptions};
use sqlx::{ConnectOptions, Row};
use tokio::sync::{mpsc, oneshot, watch};

use crate::error::{Error, Result};
use crate::schema::{Durability, SCHEMA, connect_options, decode_headers, from_epoch_ms};
use crate::writer::{Command, Record, run_writer};

/// A durable, append-only local log of topics in one SQLite file (WAL), with consumer positions
/// and a dead-letter table. Cheap to clone; one writer task serves every clone.
#[derive(Clone)]
pub struct EmbeddedLog {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: mpsc::Sender<Command>,
    readers: SqlitePool,
    last_offset: watch::Receiver<u64>,
    commits: Arc<AtomicU64>,
}

/// A consumer's stored position in a topic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Position {
    /// Everything at or below this offset is settled.
    pub committed: u64,
    /// The highest offset ever handed out (what lies between was delivered before: redelivery).
    /// Exact after a clean close; while reading it is stored a few thousand offsets ahead.
    pub delivered: u64,
}

impl EmbeddedLog {
    /// Opens (creating if needed) the log at `path`.
    pub async fn open(path: impl AsRef<Path>, durability: Durability) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let options = connect_options(&path, durability)?;
        let mut conn = options.clone().connect().await?;
        for ddl in SCHEMA.iter().chain([&crate::deliveries::DELIVERIES_TABLE]) {
            sqlx::query(*ddl).execute(&mut conn).await?;
        }
        // Files made before message ids were stored get the column.
        let has_ids: bool = sqlx::query_scalar(
            "SELECT count(*) > 0 FROM pragma_table_info('log') WHERE name = 'message_id'",
        )
        .fetch_one(&mut conn)
        .await?;
        if !has_ids {
            sqlx::query("ALTER TABLE log ADD COLUMN message_id TEXT")
                .execute(&mut conn)
                .await?;
        }
        let last: i64 = sqlx::query_scalar("SELECT coalesce(max(offset), 0) FROM log")
            .fetch_one(&mut conn)
            .await?;
        let readers = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true).row_buffer_size(1024))
            .await?;
        let (tx, rx) = mpsc::channel(1024);
        let (last_tx, last_rx) = watch::channel(last as u64);
        let commits = Arc::new(AtomicU64::new(0));
        tokio::spawn(run_writer(conn, rx, last_tx, commits.clone()));
        Ok(EmbeddedLog {
            inner: Arc::new(Inner {
                path,
                writer: tx,
                readers,
                last_offset: last_rx,
                commits,
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Appends records to `topic`; returns the offset of the last one once it is durable.
    pub async fn append(&self, topic: &str, records: Vec<Record>) -> Result<u64> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Append {
            topic: topic.into(),
            records,
            reply,
        })
        .await?;
        rx.await.map_err(|_| Error::Closed)?
    }

    pub(crate) async fn send(&self, cmd: Command) -> Result<()> {
        self.inner.writer.send(cmd).await.map_err(|_| Error::Closed)
    }

    /// How many transactions this handle's writer committed: appends, acknowledgements and
    /// dead letters arriving together share one (group commit).
    pub fn commits(&self) -> u64 {
        self.inner.commits.load(Ordering::Relaxed)
    }

    /// Watches the highest offset appended through this handle's writer.
    pub(crate) fn offsets(&self) -> watch::Receiver<u64> {
        self.inner.last_offset.clone()
    }

    /// Reads up to `max` messages of `topic` after offset `after`.
    pub(crate) async fn read(
        &self,
        topic: &str,
        after: u64,
        max: usize,
        redelivered_upto: u64,
    ) -> Result<Vec<Message>> {
        let rows = sqlx::query(
            "SELECT offset, key, payload, headers, appended_at_ms, message_id FROM log
             WHERE topic = ? AND offset > ? ORDER BY offset LIMIT ?",
        )
        .bind(topic)
        .bind(after as i64)
        .bind(max as i64)
        .fetch_all(&self.inner.readers)
        .await?;
        let received_at = std::time::SystemTime::now();
        rows.iter()
            .map(|r| {
                let offset = r.get::<i64, _>(0) as u64;
                let redelivered = offset <= redelivered_upto;
                let mut m = Message::new(r.get::<Vec<u8>, _>(2));
                m.key = r.get(1);
                m.headers = decode_headers(r.get::<Option<&str>, _>(3))?;
                m.meta = Metadata {
                    redelivered,
                    attempt: if redelivered { 2 } else { 1 },
                    position: Some(offset),
                    exchange: Some(topic.to_owned()),
                    timestamp: Some(from_epoch_ms(r.get(4))),
                    message_id: r.get(5),
                    received_at,
                    ..Metadata::default()
                };
                Ok(m)
            })
            .collect()
    }

    /// The stored position of `consumer` in `topic`.
    pub async fn position(&self, consumer: &str, topic: &str) -> Result<Position> {
        let row = sqlx::query(
            "SELECT committed, delivered FROM positions WHERE consumer = ? AND topic = ?",
        )
        .bind(consumer)
        .bind(topic)
        .fetch_optional(&self.inner.readers)
        .await?;
        Ok(row
            .map(|r| Position {
                committed: r.get::<i64, _>(0) as u64,
                delivered: r.get::<i64, _>(1) as u64,
            })
            .unwrap_or_default())
    }

    /// Messages in `topic`, and the highest offset among them.
    pub async fn topic_stats(&self, topic: &str) -> Result<(u64, u64)> {
        let r = sqlx::query("SELECT count(*), coalesce(max(offset), 0) FROM log WHERE topic = ?")
            .bind(topic)
            .fetch_one(&self.inner.readers)
            .await?;
        Ok((r.get::<i64, _>(0) as u64, r.get::<i64, _>(1) as u64))
    }

    /// The pool of read-only connections, for inspection (dead letters, tests).
    pub fn readers(&self) -> &SqlitePool {
        &self.inner.readers
    }
}
