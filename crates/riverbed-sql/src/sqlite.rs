//! The SQLite table sink: the embedded default, one writer connection, WAL.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use sqlx::query::Query;
use sqlx::sqlite::{Sqlite, SqliteArguments, SqlitePool, SqlitePoolOptions};

use crate::offsets::OffsetStore;
use crate::spec::{SqlValue, TableSpec};
use crate::sqlgen::{Dialect, create_table, insert, rows_per_statement};
use crate::table::{OffsetUpdate, RowWriter, TableSink};

/// A [`TableSink`] on SQLite.
pub type SqliteTableSink = TableSink<SqliteWriter>;

/// Writes rows into a SQLite file through one connection (SQLite has one writer at a time).
pub struct SqliteWriter {
    pool: SqlitePool,
    spec: Arc<TableSpec>,
    offsets: Option<OffsetStore>,
    full_insert: String,
    rows_per_statement: usize,
}

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
        Ok(SqliteWriter {
            full_insert: insert(&spec, Dialect::Sqlite, rows_per_statement),
            rows_per_statement,
            pool,
            spec,
            offsets,
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
        SqlValue::Int(i) | SqlValue::TimestampMs(i) => q.bind(*i),
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
        let mut tx = self.pool.begin().await?;
        let mut affected = 0;
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
            affected += q.execute(&mut *tx).await?.rows_affected();
        }
        if let (Some(store), Some(o)) = (&self.offsets, offset) {
            store.commit_sqlite(&mut tx, o).await?;
        }
        tx.commit().await?;
        Ok(affected)
    }
}
