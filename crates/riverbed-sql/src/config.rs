//! TOML configuration of the PostgreSQL sink, checked once into a [`TableSpec`] and a pool.

use std::sync::Arc;

use riverbed_core::Sink;
use serde::Deserialize;

use crate::connection::PostgresConnectionConfig;
use crate::error::{Error, Result};
use crate::inbox::InboxWriter;
use crate::postgres::{InsertStyle, PostgresWriter};
use crate::settled::SettledPosition;
use crate::spec::{Column, ColumnType, Ident, TableSpec, ValueSource, WriteMode};
use crate::table::{RowWriter, TableSink};
use crate::totals::{TotalsSpec, TotalsTableConfig};

/// One column of the target table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnConfig {
    /// Column name (letters, digits, `_`).
    pub name: String,
    /// SQL type: text, smallint, int, integer (alias bigint), real, numeric, boolean, json,
    /// bytes, timestamp, date, time. A value the type cannot keep exactly is refused.
    #[serde(rename = "type")]
    pub ty: ColumnType,
    /// Where the value comes from: a JSON pointer (`/amount`) or `$key`, `$payload`,
    /// `$position`, `$message_id`, `$subject`, `$received_at`, `$header.NAME`.
    pub from: String,
    /// A message without this value is dead-lettered instead of writing NULL.
    #[serde(default)]
    pub required: bool,
}

impl ColumnConfig {
    /// The checked column.
    pub fn column(&self) -> Result<Column> {
        Ok(Column {
            name: Ident::new(&self.name).map_err(|e| Error::Config(format!("columns: {e}")))?,
            ty: self.ty,
            from: self
                .from
                .parse()
                .map_err(|e| Error::Config(format!("column `{}`: from: {e}", self.name)))?,
            required: self.required,
        })
    }
}

/// How deletes are recognised and kept (upsert mode).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TombstoneConfig {
    /// The boolean column that marks a deleted entity (added to the table).
    #[serde(default = "default_tombstone_column")]
    pub column: String,
    /// JSON pointer of the operation field.
    #[serde(default = "default_op_field")]
    pub field: String,
    /// The operation value that means "delete".
    #[serde(default = "default_delete_value")]
    pub value: String,
}

impl TombstoneConfig {
    /// The boolean column that marks deletes (true when the operation field holds the delete
    /// value), to append to the `declared` columns; its name must not be one of theirs.
    pub fn column(&self, declared: &[Column]) -> Result<Column, String> {
        let name = Ident::new(&self.column).map_err(|e| format!("tombstone.column: {e}"))?;
        if declared.iter().any(|c| c.name == name) {
            return Err(format!(
                "tombstone.column `{name}` is also in `columns` (the sink adds the tombstone \
                 column itself: name another one)"
            ));
        }
        if !self.field.starts_with('/') {
            return Err(format!(
                "tombstone.field `{}` must be a JSON pointer such as \"/op\"",
                self.field
            ));
        }
        Ok(Column {
            name,
            ty: ColumnType::Boolean,
            from: ValueSource::Equals {
                pointer: self.field.clone(),
                value: self.value.clone(),
            },
            required: false,
        })
    }
}

fn default_tombstone_column() -> String {
    "deleted".into()
}
fn default_op_field() -> String {
    "/op".into()
}
fn default_delete_value() -> String {
    "delete".into()
}

/// What the sink does with each message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkMode {
    /// Insert rows; a row whose key exists is skipped (`ON CONFLICT DO NOTHING`).
    Append,
    /// Insert or update by key, only when the version is newer; deletes keep tombstones.
    Upsert,
    /// Run `statement` once per message id, recorded in `riverbed_inbox` in the same
    /// transaction.
    Inbox,
}

/// A PostgreSQL sink: `append`, `upsert` or `inbox`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSinkConfig {
    /// How to reach the database.
    pub connection: PostgresConnectionConfig,
    /// What to do with each message.
    pub mode: SinkMode,
    /// Target table, optionally `schema.table` (append and upsert).
    #[serde(default)]
    pub table: Option<String>,
    /// The table's columns (append and upsert).
    #[serde(default)]
    pub columns: Vec<ColumnConfig>,
    /// The key columns: the conflict target that makes writes idempotent.
    #[serde(default)]
    pub key: Vec<String>,
    /// Upsert: the column whose greater value wins; stale and duplicate updates are skipped.
    #[serde(default)]
    pub version: Option<String>,
    /// Upsert: keep deletes as tombstone rows.
    #[serde(default)]
    pub tombstone: Option<TombstoneConfig>,
    /// Create the table from the columns at start if it does not exist.
    #[serde(default)]
    pub create_table: bool,
    /// How batches become SQL: `unnest` (default) or `values`.
    #[serde(default)]
    pub insert_style: InsertStyle,
    /// Store source positions under this consumer name, in the same transaction as the rows.
    #[serde(default)]
    pub offsets: Option<String>,
    /// Inbox: the SQL to run once per message, with `:name` parameters.
    #[serde(default)]
    pub statement: Option<String>,
    /// Inbox: the statement's parameters (`name`, `type`, `from`, `required`).
    #[serde(default)]
    pub params: Vec<ColumnConfig>,
    /// Inbox: where the message id comes from (default `$message_id`).
    #[serde(default = "default_message_id")]
    pub message_id: String,
    /// Inbox: the consumer name its ids are recorded under (default: the sink's name).
    #[serde(default)]
    pub consumer: Option<String>,
    /// Append: a totals table kept in the same transaction as the rows (per group: count,
    /// sums, minimums, maximums of the rows really inserted), so totals cost O(batch)
    /// whatever the table's size. See [`TotalsTableConfig`].
    #[serde(default)]
    pub totals: Option<TotalsTableConfig>,
}

fn default_message_id() -> String {
    "$message_id".into()
}

impl PostgresSinkConfig {
    /// The checked table description (append and upsert modes).
    pub fn table_spec(&self) -> Result<TableSpec> {
        let cfg = |m: String| Error::Config(m);
        let table = self
            .table
            .as_deref()
            .ok_or_else(|| cfg(format!("mode {:?} needs `table`", self.mode)))?
            .split('.')
            .map(|p| Ident::new(p).map_err(|e| cfg(format!("table: {e}"))))
            .collect::<Result<Vec<_>>>()?;
        let mut columns = self
            .columns
            .iter()
            .map(ColumnConfig::column)
            .collect::<Result<Vec<_>>>()?;
        for (i, c) in columns.iter().enumerate() {
            if columns[..i].iter().any(|o| o.name == c.name) {
                return Err(cfg(format!("columns: `{}` is declared twice", c.name)));
            }
        }
        let key = self
            .key
            .iter()
            .map(|k| Ident::new(k).map_err(|e| cfg(format!("key: {e}"))))
            .collect::<Result<Vec<_>>>()?;
        let version = self
            .version
            .as_deref()
            .map(|v| Ident::new(v).map_err(|e| cfg(format!("version: {e}"))))
            .transpose()?;
        let mode = match self.mode {
            SinkMode::Append if version.is_some() || self.tombstone.is_some() => {
                return Err(cfg(
                    "`version` and `tombstone` need mode = \"upsert\"".into()
                ));
            }
            SinkMode::Append => WriteMode::Insert,
            SinkMode::Upsert => {
                let tombstone = match &self.tombstone {
                    Some(t) => {
                        let column = t.column(&columns).map_err(cfg)?;
                        let name = column.name.clone();
                        columns.push(column);
                        Some(name)
                    }
                    None => None,
                };
                WriteMode::Upsert { version, tombstone }
            }
            SinkMode::Inbox => return Err(cfg("mode \"inbox\" has no table spec".into())),
        };
        if key.is_empty() {
            return Err(cfg(
                "`key` names the columns that make writes idempotent".into()
            ));
        }
        let spec = TableSpec {
            table,
            columns,
            key,
            mode,
            create: self.create_table,
        };
        spec.check().map_err(cfg)?;
        Ok(spec)
    }

    /// The checked totals table, if the sink keeps one (append mode only).
    pub fn totals_spec(&self) -> Result<Option<TotalsSpec>> {
        let Some(t) = &self.totals else {
            return Ok(None);
        };
        if self.mode == SinkMode::Inbox {
            return Err(Error::Config(
                "totals: only mode = \"append\" keeps totals".into(),
            ));
        }
        t.spec(&self.table_spec()?).map(Some).map_err(Error::Config)
    }

    /// Connects and builds the sink named `name`.
    pub async fn build(&self, name: &str) -> Result<Arc<dyn Sink>> {
        self.build_with(name, None).await
    }

    /// Connects and builds the sink named `name`; with `settled` (and `offsets`), stored
    /// positions also follow the source's settled position (see [`crate::TrackSettled`]).
    pub async fn build_with(
        &self,
        name: &str,
        settled: Option<SettledPosition>,
    ) -> Result<Arc<dyn Sink>> {
        let settled = settled.filter(|_| self.offsets.is_some());
        if self.mode == SinkMode::Inbox {
            self.totals_spec()?;
            let statement = self
                .statement
                .as_deref()
                .ok_or_else(|| Error::Config("mode \"inbox\" needs `statement`".into()))?;
            let params = self
                .params
                .iter()
                .map(ColumnConfig::column)
                .collect::<Result<Vec<_>>>()?;
            let id: ValueSource = self
                .message_id
                .parse()
                .map_err(|e| Error::Config(format!("message_id: {e}")))?;
            let pool = self.connection.connect().await?;
            let consumer = self.consumer.as_deref().unwrap_or(name);
            let writer = InboxWriter::new(
                pool,
                consumer,
                statement,
                id,
                params,
                self.offsets.as_deref(),
            )
            .await?;
            return Ok(Arc::new(settle(writer.into_sink(name), settled)));
        }
        let spec = Arc::new(self.table_spec()?);
        let totals = self.totals_spec()?;
        let pool = self.connection.connect().await?;
        let mut writer =
            PostgresWriter::new(pool, spec, self.offsets.as_deref(), self.insert_style).await?;
        if let Some(t) = totals {
            writer = writer.with_totals(t).await?;
        }
        tracing::info!(sink = name, url = %self.connection.url, "PostgreSQL sink ready");
        Ok(Arc::new(settle(writer.into_sink(name), settled)))
    }
}

/// The sink, following `settled` if given.
fn settle<W: RowWriter>(sink: TableSink<W>, settled: Option<SettledPosition>) -> TableSink<W> {
    match settled {
        Some(s) => sink.with_settled(s),
        None => sink,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn parses_an_upsert_with_tombstones_and_refuses_unknown_fields() {
        let c: PostgresSinkConfig = toml::from_str(
            r#"
            mode = "upsert"
            table = "ledger.accounts"
            key = ["id"]
            version = "version"
            tombstone = {}
            columns = [
              { name = "id", type = "text", from = "/id", required = true },
              { name = "balance", type = "numeric", from = "/balance" },
              { name = "version", type = "integer", from = "/version" },
            ]
            [connection]
            url = "postgres://app:secret@127.0.0.1/test"
            statement_timeout = "5s"
            "#,
        )
        .unwrap();
        let spec = c.table_spec().unwrap();
        assert_eq!(spec.columns.len(), 4);
        assert_eq!(spec.tombstone_index(), Some(3));
        assert_eq!(c.connection.statement_timeout, Duration::from_secs(5));
        assert!(!format!("{c:?}").contains("secret"));
        let bad = toml::from_str::<PostgresSinkConfig>(
            "mode = \"append\"\ntabel = \"x\"\n[connection]\nurl = \"postgres://x\"",
        );
        assert!(bad.unwrap_err().to_string().contains("tabel"));
    }

    fn upsert(columns: &str, tombstone: &str) -> PostgresSinkConfig {
        toml::from_str(&format!(
            "mode = \"upsert\"\ntable = \"t\"\nkey = [\"id\"]\nversion = \"v\"\n{tombstone}\n\
             columns = [{columns}]\n[connection]\nurl = \"postgres://x\""
        ))
        .unwrap()
    }

    #[test]
    fn duplicate_columns_are_refused_naming_the_field() {
        let cols = r#"{ name = "id", type = "text", from = "/id" },
                      { name = "v", type = "integer", from = "/v" },
                      { name = "deleted", type = "boolean", from = "/gone" }"#;
        let err = upsert(cols, "tombstone = {}").table_spec().unwrap_err();
        assert!(
            err.to_string().contains("tombstone.column `deleted`"),
            "{err}"
        );
        assert!(
            upsert(cols, "tombstone = { column = \"gone\" }")
                .table_spec()
                .is_ok()
        );
        let twice = r#"{ name = "id", type = "text", from = "/id" },
                       { name = "v", type = "integer", from = "/v" },
                       { name = "v", type = "integer", from = "/w" }"#;
        let err = upsert(twice, "").table_spec().unwrap_err();
        assert!(
            err.to_string().contains("columns: `v` is declared twice"),
            "{err}"
        );
    }
}
