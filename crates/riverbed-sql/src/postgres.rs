//! The PostgreSQL table sink: a connection pool, batches written as one `UNNEST` (or multi-row
//! `VALUES`) statement per transaction, offsets (and a totals table, when asked) committed in
//! the same transaction.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgArguments, PgConnectOptions, PgPool, PgPoolOptions, Postgres};
use sqlx::query::Query;

use crate::offsets::OffsetStore;
use crate::spec::{ColumnType, SqlValue, TableSpec};
use crate::sqlgen::{Dialect, create_table, insert, insert_unnest, rows_per_statement};
use crate::table::{OffsetUpdate, RowWriter, TableSink};
use crate::totals::TotalsSpec;
use crate::totals_seed::{Seeded, seed_once};

/// A [`TableSink`] on PostgreSQL.
pub type PostgresTableSink = TableSink<PostgresWriter>;

/// How a batch becomes SQL.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InsertStyle {
    /// One array parameter per column, `INSERT ... SELECT ... FROM UNNEST(...)`: one prepared
    /// statement for every batch size (the faster one, see BENCHMARKS.md).
    #[default]
    Unnest,
    /// Multi-row `INSERT ... VALUES (...), (...)`, one parameter per value.
    Values,
}

/// Opens a pool on `options` with at most `max_connections` connections; every statement is
/// cancelled after `statement_timeout` (a timeout is a transient failure, retried). Set the
/// application name on `options` to tell Riverbed's connections apart in `pg_stat_activity`.
pub async fn postgres_pool(
    options: PgConnectOptions,
    max_connections: u32,
    acquire_timeout: Duration,
    statement_timeout: Duration,
) -> Result<PgPool, sqlx::Error> {
    let ms = statement_timeout.as_millis().to_string();
    let options = options.options([("statement_timeout", ms.as_str())]);
    PgPoolOptions::new()
        .max_connections(max_connections.max(1))
        .acquire_timeout(acquire_timeout)
        .test_before_acquire(true)
        .connect_with(options)
        .await
}

/// Writes rows into one PostgreSQL table.
pub struct PostgresWriter {
    pool: PgPool,
    spec: Arc<TableSpec>,
    offsets: Option<OffsetStore>,
    style: InsertStyle,
    unnest_sql: String,
    values_sql: String,
    rows_per_statement: usize,
    totals: Option<Arc<TotalsSpec>>,
}

impl PostgresWriter {
    /// A writer for `spec` on `pool`, creating the table if the spec asks; with `offsets`, it
    /// also commits source positions under that consumer name.
    pub async fn new(
        pool: PgPool,
        spec: Arc<TableSpec>,
        offsets: Option<&str>,
        style: InsertStyle,
    ) -> Result<Self, sqlx::Error> {
        if spec.create {
            crate::ddl::create_serialized(&pool, &create_table(&spec, Dialect::Postgres)).await?;
        }
        let offsets = match offsets {
            Some(consumer) => Some(OffsetStore::postgres(pool.clone(), consumer).await?),
            None => None,
        };
        let rows_per_statement = rows_per_statement(&spec, Dialect::Postgres);
        Ok(PostgresWriter {
            unnest_sql: insert_unnest(&spec),
            values_sql: insert(&spec, Dialect::Postgres, rows_per_statement),
            rows_per_statement,
            pool,
            spec,
            offsets,
            style,
            totals: None,
        })
    }

    /// Keeps `totals` in the same transaction as every batch (see the `totals` module):
    /// creates the totals table if asked, and seeds it from the rows already in the sink's
    /// table unless that was done before (logged with how long it took).
    pub async fn with_totals(mut self, totals: TotalsSpec) -> Result<Self, sqlx::Error> {
        if totals.create {
            crate::ddl::create_serialized(&self.pool, &totals.create_table()).await?;
        }
        let name = totals.table_sql();
        if totals.seed {
            match seed_once(&self.pool, &totals, &self.spec.table_sql()).await? {
                Seeded::Already => {
                    tracing::debug!(totals = %name, "Totals table seeded before; kept as it is")
                }
                Seeded::Now {
                    rows,
                    groups,
                    took_ms,
                } => tracing::info!(
                    totals = %name, rows, groups, took_ms,
                    "Totals table seeded from the rows already in the table"
                ),
            }
        }
        self.unnest_sql = totals.wrap_insert(&self.unnest_sql);
        self.values_sql = totals.wrap_insert(&self.values_sql);
        self.totals = Some(Arc::new(totals));
        Ok(self)
    }

    /// Runs one insert statement; returns the rows it inserted (with totals, the statement
    /// itself returns that number: its own row count is the totals rows').
    async fn run(
        &self,
        tx: &mut sqlx::PgTransaction<'_>,
        q: PgQuery<'_>,
    ) -> Result<u64, sqlx::Error> {
        if self.totals.is_some() {
            let row = q.fetch_one(&mut **tx).await?;
            let n: i64 = sqlx::Row::try_get(&row, 0)?;
            return Ok(n as u64);
        }
        Ok(q.execute(&mut **tx).await?.rows_affected())
    }

    /// Builds the sink named `name` on this writer.
    pub fn into_sink(self, name: &str) -> PostgresTableSink {
        let store_offsets = self.offsets.is_some();
        let spec = self.spec.clone();
        TableSink::new(name, self, spec, store_offsets)
    }

    async fn write_values(
        &self,
        tx: &mut sqlx::PgTransaction<'_>,
        rows: &[&[SqlValue]],
    ) -> Result<u64, sqlx::Error> {
        let mut affected = 0;
        for chunk in rows.chunks(self.rows_per_statement) {
            let sql = match &self.totals {
                _ if chunk.len() == self.rows_per_statement => self.values_sql.clone(),
                Some(t) => t.wrap_insert(&insert(&self.spec, Dialect::Postgres, chunk.len())),
                None => insert(&self.spec, Dialect::Postgres, chunk.len()),
            };
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for row in chunk {
                for (v, c) in row.iter().zip(&self.spec.columns) {
                    q = bind_value(q, v, c.ty)?;
                }
            }
            affected += self.run(tx, q).await?;
        }
        Ok(affected)
    }

    async fn write_unnest(
        &self,
        tx: &mut sqlx::PgTransaction<'_>,
        rows: &[&[SqlValue]],
    ) -> Result<u64, sqlx::Error> {
        let mut q = sqlx::query(sqlx::AssertSqlSafe(self.unnest_sql.clone()));
        for (i, c) in self.spec.columns.iter().enumerate() {
            q = bind_array(q, rows.iter().map(|r| &r[i]), c.ty)?;
        }
        self.run(tx, q).await
    }
}

fn encode_error(v: &SqlValue, ty: ColumnType) -> sqlx::Error {
    sqlx::Error::Encode(format!("{v:?} cannot be written to a {ty:?} column").into())
}

/// The value as text (text, decimals bound as text and cast, JSON documents, timestamps,
/// dates and times in the ISO forms PostgreSQL reads back exactly).
pub(crate) fn text_of(v: &SqlValue, ty: ColumnType) -> Result<Option<String>, sqlx::Error> {
    Ok(match v {
        SqlValue::Null => None,
        SqlValue::Text(s) => Some(s.clone()),
        SqlValue::Json(j) => Some(j.to_string()),
        SqlValue::Int(i) => Some(i.to_string()),
        SqlValue::Float(f) => Some(f.to_string()),
        SqlValue::Bool(b) => Some(b.to_string()),
        SqlValue::Timestamp(t) => Some(crate::convert::timestamp_text(*t)),
        SqlValue::Date(d) => Some(d.to_string()),
        SqlValue::Time(t) => Some(t.to_string()),
        SqlValue::Bytes(_) => return Err(encode_error(v, ty)),
    })
}

/// The value as an integer of type `T` (`i16`, `i32`, `i64`); out of range is an error.
pub(crate) fn int_of<T: TryFrom<i64>>(
    v: &SqlValue,
    ty: ColumnType,
) -> Result<Option<T>, sqlx::Error> {
    match v {
        SqlValue::Null => Ok(None),
        SqlValue::Int(i) => T::try_from(*i).map(Some).map_err(|_| encode_error(v, ty)),
        _ => Err(encode_error(v, ty)),
    }
}

pub(crate) fn float_of(v: &SqlValue, ty: ColumnType) -> Result<Option<f64>, sqlx::Error> {
    match v {
        SqlValue::Null => Ok(None),
        SqlValue::Float(f) => Ok(Some(*f)),
        _ => Err(encode_error(v, ty)),
    }
}

fn bool_of(v: &SqlValue, ty: ColumnType) -> Result<Option<bool>, sqlx::Error> {
    match v {
        SqlValue::Null => Ok(None),
        SqlValue::Bool(b) => Ok(Some(*b)),
        _ => Err(encode_error(v, ty)),
    }
}

fn bytes_of(v: &SqlValue, ty: ColumnType) -> Result<Option<Vec<u8>>, sqlx::Error> {
    match v {
        SqlValue::Null => Ok(None),
        SqlValue::Bytes(b) => Ok(Some(b.clone())),
        SqlValue::Text(s) => Ok(Some(s.clone().into_bytes())),
        _ => Err(encode_error(v, ty)),
    }
}

type PgQuery<'q> = Query<'q, Postgres, PgArguments>;

/// Binds one value as the type its placeholder expects (NULLs typed too).
pub(crate) fn bind_value<'q>(
    q: PgQuery<'q>,
    v: &SqlValue,
    ty: ColumnType,
) -> Result<PgQuery<'q>, sqlx::Error> {
    use ColumnType::*;
    Ok(match ty {
        Text | Numeric | Json | Timestamp | Date | Time => q.bind(text_of(v, ty)?),
        SmallInt => q.bind(int_of::<i16>(v, ty)?),
        Int => q.bind(int_of::<i32>(v, ty)?),
        Integer => q.bind(int_of::<i64>(v, ty)?),
        Real => q.bind(float_of(v, ty)?),
        Boolean => q.bind(bool_of(v, ty)?),
        Bytes => q.bind(bytes_of(v, ty)?),
    })
}

/// Binds one column of a batch as an array.
fn bind_array<'q, 'v>(
    q: PgQuery<'q>,
    values: impl Iterator<Item = &'v SqlValue>,
    ty: ColumnType,
) -> Result<PgQuery<'q>, sqlx::Error> {
    use ColumnType::*;
    fn all<'v, T>(
        values: impl Iterator<Item = &'v SqlValue>,
        ty: ColumnType,
        f: fn(&SqlValue, ColumnType) -> Result<Option<T>, sqlx::Error>,
    ) -> Result<Vec<Option<T>>, sqlx::Error> {
        values.map(|v| f(v, ty)).collect()
    }
    Ok(match ty {
        Text | Numeric | Json | Timestamp | Date | Time => q.bind(all(values, ty, text_of)?),
        SmallInt => q.bind(all(values, ty, int_of::<i16>)?),
        Int => q.bind(all(values, ty, int_of::<i32>)?),
        Integer => q.bind(all(values, ty, int_of::<i64>)?),
        Real => q.bind(all(values, ty, float_of)?),
        Boolean => q.bind(all(values, ty, bool_of)?),
        Bytes => q.bind(all(values, ty, bytes_of)?),
    })
}

#[async_trait]
impl RowWriter for PostgresWriter {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    async fn write_rows(
        &self,
        rows: &[&[SqlValue]],
        offset: Option<OffsetUpdate>,
    ) -> Result<u64, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let affected = match self.style {
            InsertStyle::Unnest => self.write_unnest(&mut tx, rows).await?,
            InsertStyle::Values => self.write_values(&mut tx, rows).await?,
        };
        if let (Some(store), Some(o)) = (&self.offsets, offset) {
            store.commit_postgres(&mut tx, o).await?;
        }
        tx.commit().await?;
        Ok(affected)
    }

    async fn advance_offsets(&self, position: u64) -> Result<(), sqlx::Error> {
        match &self.offsets {
            Some(store) => store.advance_all(position).await,
            None => Ok(()),
        }
    }
}
