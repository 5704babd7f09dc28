//! The SQLite table sink: the embedded default, one writer connection, WAL.
//!
//! Group commit: every partition's batch becomes a job for one committer task, which runs the
//! jobs waiting at that moment in one transaction, each inside its own savepoint. A refused job
//! rolls back to its savepoint alone; the transaction commits the others with one fsync
//! instead of one per partition.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use sqlx::query::Query;
use sqlx::sqlite::{Sqlite, SqliteArguments, SqlitePool, SqlitePoolOptions};
use tokio::sync::{mpsc, oneshot};

use crate::offsets::OffsetStore;
use crate::spec::{SqlValue, TableSpec};
use crate::sqlgen::{Dialect, create_table, insert, rows_per_statement};
use crate::table::{OffsetUpdate, RowWriter, TableSink};

/// A [`TableSink`] on SQLite.
pub type SqliteTableSink = TableSink<SqliteWriter>;

/// Writes rows into a SQLite file through one connection (SQLite has one writer at a time).
pub struct SqliteWriter {
    spec: Arc<TableSpec>,
    offsets: Option<OffsetStore>,
    full_insert: String,
    rows_per_statement: usize,
    jobs: mpsc::Sender<Job>,
}

type SqliteQuery = Query<'static, Sqlite, SqliteArguments>;

/// One batch's statements, committed with whatever else is waiting.
struct Job {
    queries: Vec<SqliteQuery>,
    offset: Option<OffsetUpdate>,
    reply: oneshot::Sender<Result<u64, sqlx::Error>>,
}

/// Jobs folded into one transaction at most.
const MAX_GROUP: usize = 64;

/// Opens the SQLite file at `path` (WAL, synchronous=FULL) with one writer connection.
pub async fn sqlite_pool(path: &Path) -> Result<SqlitePool, sqlx::Error> {
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .synchronous(sqlx::sqlite::SqliteSynchronous::Full)
        .busy_timeout(std::time::Duration::from_secs(30));
    SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
}

impl SqliteWriter {
    /// A writer for `spec` on `pool`, creating the table if the spec asks; with `offsets`, it
    /// also commits source positions under that consumer name.
    pub async fn new(
        pool: SqlitePool,
        spec: Arc<TableSpec>,
        offsets: Option<&str>,
    ) -> Result<Self, sqlx::Error> {
        if spec.create {
            sqlx::query(sqlx::AssertSqlSafe(create_table(&spec, Dialect::Sqlite)))
                .execute(&pool)
                .await?;
        }
        let offsets = match offsets {
            Some(consumer) => Some(OffsetStore::sqlite(pool.clone(), consumer).await?),
            None => None,
        };
        let rows_per_statement = rows_per_statement(&spec, Dialect::Sqlite);
        let (jobs, rx) = mpsc::channel(MAX_GROUP);
        tokio::spawn(commit_jobs(pool, offsets.clone(), rx));
        Ok(SqliteWriter {
            full_insert: insert(&spec, Dialect::Sqlite, rows_per_statement),
            rows_per_statement,
            spec,
            offsets,
            jobs,
        })
    }

    /// Builds the sink named `name` on this writer.
    pub fn into_sink(self, name: &str) -> SqliteTableSink {
        let store_offsets = self.offsets.is_some();
        let spec = self.spec.clone();
        TableSink::new(name, self, spec, store_offsets)
    }
}

/// Binds one value.
fn bind<'q>(
    q: Query<'q, Sqlite, SqliteArguments>,
    v: &SqlValue,
) -> Query<'q, Sqlite, SqliteArguments> {
    match v {
        SqlValue::Null => q.bind(None::<String>),
        SqlValue::Int(i) => q.bind(*i),
        SqlValue::Timestamp(t) => q.bind(t.as_millisecond()),
        SqlValue::Date(d) => q.bind(d.to_string()),
        SqlValue::Time(t) => q.bind(t.to_string()),
        SqlValue::Float(f) => q.bind(*f),
        SqlValue::Text(s) => q.bind(s.clone()),
        SqlValue::Bool(b) => q.bind(*b),
        SqlValue::Bytes(b) => q.bind(b.clone()),
        SqlValue::Json(j) => q.bind(j.to_string()),
    }
}

#[async_trait]
impl RowWriter for SqliteWriter {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    async fn write_rows(
        &self,
        rows: &[&[SqlValue]],
        offset: Option<OffsetUpdate>,
    ) -> Result<u64, sqlx::Error> {
        let mut queries = Vec::with_capacity(rows.len() / self.rows_per_statement + 1);
        for chunk in rows.chunks(self.rows_per_statement) {
            let sql = if chunk.len() == self.rows_per_statement {
                self.full_insert.clone()
            } else {
                insert(&self.spec, Dialect::Sqlite, chunk.len())
            };
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for row in chunk {
                for v in row.iter() {
                    q = bind(q, v);
                }
            }
            queries.push(q);
        }
        let (reply, rx) = oneshot::channel();
        let gone = || sqlx::Error::WorkerCrashed;
        self.jobs
            .send(Job {
                queries,
                offset,
                reply,
            })
            .await
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    async fn advance_offsets(&self, position: u64) -> Result<(), sqlx::Error> {
        match &self.offsets {
            Some(store) => store.advance_all(position).await,
            None => Ok(()),
        }
    }
}

/// Runs jobs in groups until every writer handle is gone.
async fn commit_jobs(pool: SqlitePool, offsets: Option<OffsetStore>, mut rx: mpsc::Receiver<Job>) {
    let mut jobs = Vec::with_capacity(MAX_GROUP);
    while rx.recv_many(&mut jobs, MAX_GROUP).await > 0 {
        let results = commit_group(&pool, offsets.as_ref(), &mut jobs).await;
        for (job, result) in jobs.drain(..).zip(results) {
            let _ = job.reply.send(result);
        }
    }
}

/// One transaction for the group, a savepoint per job.
async fn commit_group(
    pool: &SqlitePool,
    offsets: Option<&OffsetStore>,
    jobs: &mut [Job],
) -> Vec<Result<u64, sqlx::Error>> {
    let shared = |e: &sqlx::Error| sqlx::Error::Io(std::io::Error::other(e.to_string()));
    let mut tx = match pool.begin().await {
        Ok(tx) => tx,
        Err(e) => return jobs.iter().map(|_| Err(shared(&e))).collect(),
    };
    let mut results = Vec::with_capacity(jobs.len());
    for job in jobs.iter_mut() {
        let queries = std::mem::take(&mut job.queries);
        let one = async {
            let mut savepoint = sqlx::Acquire::begin(&mut tx).await?;
            let mut affected = 0;
            for q in queries {
                affected += q.execute(&mut *savepoint).await?.rows_affected();
            }
            if let (Some(store), Some(o)) = (offsets, job.offset) {
                store.commit_sqlite(&mut savepoint, o).await?;
            }
            savepoint.commit().await?;
            Ok(affected)
        };
        results.push(one.await);
    }
    if let Err(e) = tx.commit().await {
        for r in results.iter_mut().filter(|r| r.is_ok()) {
            *r = Err(shared(&e));
        }
    }
    results
}
