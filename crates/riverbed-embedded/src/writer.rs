//! The log's single writer: every append, position commit and dead letter of a moment goes into
//! one SQLite transaction (group commit), and each caller hears back only after it committed.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use bytes::Bytes;
use riverbed_core::{DeadLetter, Headers};
use sqlx::sqlite::Sqlite;
use sqlx::{Connection, QueryBuilder, SqliteConnection};
use tokio::sync::{mpsc, oneshot, watch};

use crate::dead_letter::{self, Selection};
use crate::deliveries;
use crate::error::{Error, Result};
use crate::schema::{encode_headers, epoch_ms};

/// Rows per multi-row INSERT statement.
const ROWS_PER_STATEMENT: usize = 128;
/// Commands folded into one transaction at most.
const MAX_GROUP: usize = 1024;

/// One message to append.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Partition key, if any.
    pub key: Option<String>,
    /// Payload bytes.
    pub payload: Bytes,
    /// Headers.
    pub headers: Headers,
    /// The producer's message id, if it has one (sinks deduplicate by it).
    pub message_id: Option<String>,
}

impl Record {
    /// A record with a key and a payload and no headers.
    pub fn new(key: Option<String>, payload: impl Into<Bytes>) -> Self {
        Record {
            key,
            payload: payload.into(),
            headers: Headers::new(),
            message_id: None,
        }
    }

    /// Sets the producer's message id.
    pub fn with_message_id(mut self, id: impl Into<String>) -> Self {
        self.message_id = Some(id.into());
        self
    }
}

pub(crate) enum Command {
    Append {
        topic: Arc<str>,
        records: Vec<Record>,
        reply: oneshot::Sender<Result<u64>>,
    },
    Commit {
        consumer: Arc<str>,
        topic: Arc<str>,
        committed: u64,
        delivered: u64,
        /// `delivered` is the exact mark (a clean close): it replaces one reserved ahead.
        exact: bool,
        reply: Option<oneshot::Sender<Result<()>>>,
    },
    /// Deliveries about to be handed out: see [`crate::deliveries`].
    Delivered {
        consumer: Arc<str>,
        topic: Arc<str>,
        upto: u64,
        redelivered: Vec<u64>,
        reply: oneshot::Sender<Result<Vec<u32>>>,
    },
    DeadLetters {
        topic: Arc<str>,
        letters: Vec<DeadLetter>,
        reply: oneshot::Sender<Result<()>>,
    },
    Redrive {
        selection: Selection,
        reply: oneshot::Sender<Result<u64>>,
    },
    Purge {
        selection: Selection,
        reply: oneshot::Sender<Result<u64>>,
    },
}

enum Reply {
    Append(oneshot::Sender<Result<u64>>, u64),
    Done(oneshot::Sender<Result<()>>),
    Counts(oneshot::Sender<Result<Vec<u32>>>, Vec<u32>),
}

/// Runs the writer until every sender is gone. `last_offset` announces new appends.
pub(crate) async fn run_writer(
    mut conn: SqliteConnection,
    mut rx: mpsc::Receiver<Command>,
    last_offset: watch::Sender<u64>,
    commits: Arc<AtomicU64>,
) {
    let mut cmds = Vec::with_capacity(MAX_GROUP);
    while rx.recv_many(&mut cmds, MAX_GROUP).await > 0 {
        let mut replies = Vec::with_capacity(cmds.len());
        let result = write_group(&mut conn, &mut cmds, &mut replies).await;
        if result.is_ok() {
            commits.fetch_add(1, Ordering::Relaxed);
        }
        match result {
            Ok(Some(last)) => {
                last_offset.send_replace(last);
                metrics::counter!("riverbed_embedded_commits_total").increment(1);
            }
            Ok(None) => {}
            Err(ref e) => {
                tracing::error!(error = %e, "Embedded log write failed; callers will retry")
            }
        }
        for r in replies {
            match (r, &result) {
                (Reply::Append(tx, last), Ok(_)) => {
                    let _ = tx.send(Ok(last));
                }
                (Reply::Done(tx), Ok(_)) => {
                    let _ = tx.send(Ok(()));
                }
                (Reply::Counts(tx, counts), Ok(_)) => {
                    let _ = tx.send(Ok(counts));
                }
                (Reply::Counts(tx, _), Err(e)) => {
                    let _ = tx.send(Err(Error::Write(e.to_string())));
                }
                (Reply::Append(tx, _), Err(e)) => {
                    let _ = tx.send(Err(Error::Write(e.to_string())));
                }
                (Reply::Done(tx), Err(e)) => {
                    let _ = tx.send(Err(Error::Write(e.to_string())));
                }
            }
        }
    }
}

/// A consumer's committed offset, delivered mark, and whether the mark is exact.
type PositionUpdate = (u64, u64, bool);

async fn write_group(
    conn: &mut SqliteConnection,
    cmds: &mut Vec<Command>,
    replies: &mut Vec<Reply>,
) -> Result<Option<u64>> {
    let now = epoch_ms(SystemTime::now());
    let mut tx = conn.begin().await?;
    let mut last_append = None;
    let mut commits: HashMap<(Arc<str>, Arc<str>), PositionUpdate> = HashMap::new();
    for cmd in cmds.drain(..) {
        match cmd {
            Command::Append {
                topic,
                records,
                reply,
            } => {
                for chunk in records.chunks(ROWS_PER_STATEMENT) {
                    let mut q = QueryBuilder::<Sqlite>::new(
                        "INSERT INTO log (topic, key, payload, headers, appended_at_ms, message_id) ",
                    );
                    q.push_values(chunk, |mut b, r| {
                        b.push_bind(&*topic)
                            .push_bind(r.key.as_deref())
                            .push_bind(&r.payload[..])
                            .push_bind(encode_headers(&r.headers))
                            .push_bind(now)
                            .push_bind(r.message_id.as_deref());
                    });
                    q.build().execute(&mut *tx).await?;
                }
                let last: i64 = sqlx::query_scalar("SELECT last_insert_rowid()")
                    .fetch_one(&mut *tx)
                    .await?;
                last_append = Some(last as u64);
                replies.push(Reply::Append(reply, last as u64));
            }
            Command::Commit {
                consumer,
                topic,
                committed,
                delivered,
                exact,
                reply,
            } => {
                let e = commits.entry((consumer, topic)).or_insert((0, 0, false));
                e.0 = e.0.max(committed);
                e.1 = if exact { delivered } else { e.1.max(delivered) };
                e.2 |= exact;
                if let Some(r) = reply {
                    replies.push(Reply::Done(r));
                }
            }
            Command::Delivered {
                consumer,
                topic,
                upto,
                redelivered,
                reply,
            } => {
                let counts =
                    deliveries::record(&mut tx, &consumer, &topic, upto, &redelivered, now).await?;
                replies.push(Reply::Counts(reply, counts));
            }
            Command::DeadLetters {
                topic,
                letters,
                reply,
            } => {
                insert_dead_letters(&mut tx, &topic, &letters, now).await?;
                replies.push(Reply::Done(reply));
            }
            Command::Redrive { selection, reply } => {
                let moved = dead_letter::move_back(&mut tx, &selection, now).await?;
                if moved > 0 {
                    let last: i64 = sqlx::query_scalar("SELECT last_insert_rowid()")
                        .fetch_one(&mut *tx)
                        .await?;
                    last_append = Some(last as u64);
                }
                replies.push(Reply::Append(reply, moved));
            }
            Command::Purge { selection, reply } => {
                let deleted = dead_letter::delete(&mut tx, &selection).await?;
                replies.push(Reply::Append(reply, deleted));
            }
        }
    }
    for ((consumer, topic), (committed, delivered, exact)) in commits {
        sqlx::query(
            "INSERT INTO positions (consumer, topic, committed, delivered, updated_at_ms)
             VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (consumer, topic) DO UPDATE SET
               committed = max(committed, excluded.committed),
               delivered = CASE WHEN ?6 THEN max(excluded.delivered, excluded.committed)
                                ELSE max(delivered, excluded.delivered) END,
               updated_at_ms = excluded.updated_at_ms",
        )
        .bind(&*consumer)
        .bind(&*topic)
        .bind(committed as i64)
        .bind(delivered as i64)
        .bind(now)
        .bind(exact)
        .execute(&mut *tx)
        .await?;
        deliveries::forget_settled(&mut tx, &consumer, &topic, committed).await?;
    }
    tx.commit().await?;
    Ok(last_append)
}

async fn insert_dead_letters(
    conn: &mut SqliteConnection,
    topic: &str,
    letters: &[DeadLetter],
    now: i64,
) -> Result<()> {
    for l in letters {
        sqlx::query(
            "INSERT OR IGNORE INTO dead_letters (topic, log_offset, message_id, key, payload, headers, reason,
               error, attempts, stage, first_failure_ms, last_failure_ms, created_at_ms)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(topic)
        .bind(l.message.meta.position.map(|p| p as i64))
        .bind(l.message.meta.message_id.as_deref())
        .bind(l.message.key.as_deref())
        .bind(&l.message.payload[..])
        .bind(encode_headers(&l.message.headers))
        .bind(&l.reason)
        .bind(&l.error)
        .bind(l.attempts as i64)
        .bind(&l.stage)
        .bind(epoch_ms(l.first_failure))
        .bind(epoch_ms(l.last_failure))
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}
