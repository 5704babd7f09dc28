//! The inbox: any parameterised SQL the user writes, run once per message id. The message id
//! is recorded in an inbox table in the same transaction as the statement's effects, so a
//! redelivered message finds its id there and is skipped: effectively-once for any SQL.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use sqlx::Row;
use sqlx::postgres::PgPool;

use crate::offsets::OffsetStore;
use crate::postgres::{bind_value, text_of};
use crate::spec::{Column, ColumnType, Ident, SqlValue, TableSpec, ValueSource, WriteMode};
use crate::sqlgen::Dialect;
use crate::table::{OffsetUpdate, RowWriter, TableSink};

/// A [`TableSink`] running an inbox statement.
pub type InboxSink = TableSink<InboxWriter>;

/// A user statement with `:name` placeholders turned into `$n` (with casts for their types).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedStatement {
    /// The SQL to prepare.
    pub sql: String,
    /// The parameter names in `$n` order.
    pub names: Vec<String>,
}

/// Rewrites `:name` placeholders of `sql` into PostgreSQL `$n` parameters, skipping string
/// literals, quoted identifiers, comments, dollar-quoted bodies and `::` casts. `type_of`
/// gives each name's type (for the cast); an unknown name or a positional `$1` is an error.
pub fn compile_named(
    sql: &str,
    type_of: impl Fn(&str) -> Option<ColumnType>,
) -> Result<NamedStatement, String> {
    let b = sql.as_bytes();
    let mut out = String::with_capacity(sql.len() + 16);
    let mut names: Vec<String> = Vec::new();
    let mut i = 0;
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    while i < b.len() {
        let rest = &sql[i..];
        let skip_to = |end: &str, from: usize| rest[from..].find(end).map(|p| from + p + end.len());
        let copied = match b[i] {
            b'\'' => skip_to("'", 1).ok_or("unterminated string literal")?,
            b'"' => skip_to("\"", 1).ok_or("unterminated quoted identifier")?,
            b'-' if rest.starts_with("--") => skip_to("\n", 2).unwrap_or(rest.len()),
            b'/' if rest.starts_with("/*") => skip_to("*/", 2).ok_or("unterminated comment")?,
            b':' if rest.starts_with("::") => 2,
            b'$' if rest.len() > 1 && b[i + 1].is_ascii_digit() => {
                return Err("use named parameters (:name), not positional ones ($1)".into());
            }
            b'$' => match rest[1..].find('$') {
                Some(p) if rest[1..1 + p].bytes().all(word) => {
                    let tag = &rest[..p + 2];
                    skip_to(tag, tag.len()).ok_or("unterminated dollar-quoted string")?
                }
                _ => 1,
            },
            b':' if rest.len() > 1 && (b[i + 1].is_ascii_alphabetic() || b[i + 1] == b'_') => {
                let len = rest[1..].bytes().take_while(|c| word(*c)).count();
                let name = &rest[1..1 + len];
                let ty = type_of(name).ok_or_else(|| format!("`:{name}` has no parameter"))?;
                let n = match names.iter().position(|x| x == name) {
                    Some(p) => p + 1,
                    None => {
                        names.push(name.to_owned());
                        names.len()
                    }
                };
                out.push_str(&Dialect::Postgres.placeholder(n, ty));
                i += 1 + len;
                continue;
            }
            _ => rest.chars().next().map(char::len_utf8).unwrap_or(1),
        };
        out.push_str(&rest[..copied]);
        i += copied;
    }
    Ok(NamedStatement { sql: out, names })
}

/// The inbox table (one per database; `consumer` separates sinks).
pub const INBOX_TABLE: &str = "CREATE TABLE IF NOT EXISTS riverbed_inbox (
    consumer TEXT NOT NULL,
    message_id TEXT NOT NULL,
    processed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, message_id)
)";

/// Runs a user statement once per new message id, recording ids in `riverbed_inbox`.
pub struct InboxWriter {
    pool: PgPool,
    consumer: String,
    statement: NamedStatement,
    /// Column 0 is the message id; then one column per statement parameter, in `$n` order.
    spec: Arc<TableSpec>,
    offsets: Option<OffsetStore>,
}

impl InboxWriter {
    /// An inbox for `consumer` running `sql` with the named `params` (each a column whose name
    /// is the parameter's), the message id taken from `id` (usually `$message_id`). With
    /// `offsets`, source positions are stored under that consumer name (where a resuming
    /// stream reads them), in the same transaction.
    pub async fn new(
        pool: PgPool,
        consumer: &str,
        sql: &str,
        id: ValueSource,
        params: Vec<Column>,
        offsets: Option<&str>,
    ) -> Result<Self, crate::Error> {
        for (i, p) in params.iter().enumerate() {
            if params[..i].iter().any(|o| o.name == p.name) {
                return Err(crate::Error::Config(format!(
                    "params: `{}` is declared twice",
                    p.name
                )));
            }
        }
        let statement = compile_named(sql, |n| {
            params.iter().find(|c| c.name.as_str() == n).map(|c| c.ty)
        })
        .map_err(crate::Error::Config)?;
        if let Some(unused) = params
            .iter()
            .find(|c| !statement.names.iter().any(|n| n == c.name.as_str()))
        {
            return Err(crate::Error::Config(format!(
                "parameter `{}` is not used by the statement",
                unused.name
            )));
        }
        let mut columns = vec![Column {
            name: Ident::new("riverbed_message_id").expect("a valid identifier"),
            ty: ColumnType::Text,
            from: id,
            required: true,
        }];
        for n in &statement.names {
            let c = params
                .iter()
                .find(|c| c.name.as_str() == n)
                .expect("compiled");
            columns.push(c.clone());
        }
        let spec = TableSpec {
            table: vec![Ident::new("riverbed_inbox").expect("a valid identifier")],
            key: vec![columns[0].name.clone()],
            columns,
            mode: WriteMode::Insert,
            create: false,
        };
        crate::ddl::create_serialized(&pool, INBOX_TABLE).await?;
        let offsets = match offsets {
            Some(name) => Some(OffsetStore::postgres(pool.clone(), name).await?),
            None => None,
        };
        Ok(InboxWriter {
            pool,
            consumer: consumer.to_owned(),
            statement,
            spec: Arc::new(spec),
            offsets,
        })
    }

    /// Builds the sink named `name` on this writer.
    pub fn into_sink(self, name: &str) -> InboxSink {
        let store_offsets = self.offsets.is_some();
        let spec = self.spec.clone();
        TableSink::new(name, self, spec, store_offsets)
    }
}

#[async_trait]
impl RowWriter for InboxWriter {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    async fn write_rows(
        &self,
        rows: &[&[SqlValue]],
        offset: Option<OffsetUpdate>,
    ) -> Result<u64, sqlx::Error> {
        let ids = rows
            .iter()
            .map(|r| text_of(&r[0], ColumnType::Text))
            .collect::<Result<Vec<_>, _>>()?;
        let mut tx = self.pool.begin().await?;
        let fresh: HashSet<String> = sqlx::query(
            "INSERT INTO riverbed_inbox (consumer, message_id) SELECT $1, id FROM UNNEST($2::text[]) AS u(id)
             ON CONFLICT DO NOTHING RETURNING message_id",
        )
        .bind(&self.consumer)
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|r| r.get::<String, _>(0))
        .collect();
        for (row, id) in rows.iter().zip(&ids) {
            if !id.as_ref().is_some_and(|id| fresh.contains(id)) {
                continue;
            }
            let mut q = sqlx::query(sqlx::AssertSqlSafe(self.statement.sql.clone()));
            for (v, c) in row[1..].iter().zip(&self.spec.columns[1..]) {
                q = bind_value(q, v, c.ty)?;
            }
            q.execute(&mut *tx).await?;
        }
        if let (Some(store), Some(o)) = (&self.offsets, offset) {
            store.commit_postgres(&mut tx, o).await?;
        }
        tx.commit().await?;
        let duplicates = (rows.len() - fresh.len()) as u64;
        if duplicates > 0 {
            metrics::counter!("riverbed_sql_inbox_duplicates_total", "consumer" => self.consumer.clone())
                .increment(duplicates);
        }
        Ok(fresh.len() as u64)
    }

    async fn advance_offsets(&self, position: u64) -> Result<(), sqlx::Error> {
        match &self.offsets {
            Some(store) => store.advance_all(position).await,
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn types(n: &str) -> Option<ColumnType> {
        match n {
            "amount" => Some(ColumnType::Numeric),
            "account" => Some(ColumnType::Text),
            _ => None,
        }
    }

    #[test]
    fn named_parameters_become_positional_outside_literals_and_casts() {
        let s = compile_named(
            "UPDATE a SET b = b + :amount, note = ':x' || $$:y$$ WHERE id = :account::text -- :z\n AND :amount > 0",
            types,
        )
        .unwrap();
        assert_eq!(
            s.sql,
            "UPDATE a SET b = b + $1::numeric, note = ':x' || $$:y$$ WHERE id = $2::text -- :z\n AND $1::numeric > 0"
        );
        assert_eq!(s.names, vec!["amount", "account"]);
        assert!(compile_named("SELECT :nope", types).is_err());
        assert!(compile_named("SELECT $1", types).is_err());
        assert!(compile_named("SELECT 'open", types).is_err());
    }
}
