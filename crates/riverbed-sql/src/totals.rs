//! A totals table kept by an append sink in the same transaction as its rows: per group, the
//! number of rows and sums, minimums and maximums of columns, counting only the rows really
//! inserted (a redelivered or duplicate row is skipped by `ON CONFLICT DO NOTHING` and so
//! changes nothing). Its cost is one upsert per group in the batch, whatever the table's size.
//!
//! ```sql
//! WITH ins AS (INSERT INTO t ... ON CONFLICT (id) DO NOTHING RETURNING provider, amount),
//!      tot AS (INSERT INTO totals AS tot (provider, count, sum)
//!              SELECT provider, count(*), sum(amount) FROM ins GROUP BY provider ORDER BY provider
//!              ON CONFLICT (provider) DO UPDATE SET count = tot.count + excluded.count, ...)
//! SELECT count(*) FROM ins
//! ```
//! Groups are upserted in a fixed order, so two transactions touching the same groups wait for
//! each other instead of deadlocking. Rows are only ever added (append mode), so minimums and
//! maximums stay exact; upserts, which change rows, cannot keep totals and are refused.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::spec::{ColumnType, Ident, TableSpec, WriteMode};
use crate::sqlgen::Dialect;

/// `totals` of an append sink: the totals table, its groups and its totals.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TotalsTableConfig {
    /// The totals table, optionally `schema.table`: one row per group.
    pub table: String,
    /// The sink's columns that form a group (each `required`, or a key column: a group is
    /// never NULL).
    pub group: Vec<String>,
    /// The totals column holding the number of rows inserted (default `count`).
    #[serde(default = "default_count")]
    pub count: String,
    /// Sums: totals column = sink column, such as `{ sum = "amount" }` (numeric columns; an
    /// integer column is summed as `numeric`, so it cannot overflow).
    #[serde(default)]
    pub sum: BTreeMap<String, String>,
    /// Minimums: totals column = sink column (numbers, text, dates and times).
    #[serde(default)]
    pub min: BTreeMap<String, String>,
    /// Maximums: totals column = sink column (numbers, text, dates and times).
    #[serde(default)]
    pub max: BTreeMap<String, String>,
    /// Create the totals table at start if it does not exist.
    #[serde(default)]
    pub create_table: bool,
    /// At the first start, fill the totals from the rows already in the sink's table (history
    /// that never came through the sink), once: recorded in `riverbed_totals_seeded`.
    /// Default on; without it the totals count only rows this sink inserts.
    #[serde(default = "yes")]
    pub seed: bool,
}

fn default_count() -> String {
    "count".into()
}
fn yes() -> bool {
    true
}

/// What an aggregate computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggregateKind {
    /// `sum`, added to the stored sum.
    Sum,
    /// `min`, kept with `LEAST`.
    Min,
    /// `max`, kept with `GREATEST`.
    Max,
}

impl AggregateKind {
    fn sql(self) -> &'static str {
        match self {
            AggregateKind::Sum => "sum",
            AggregateKind::Min => "min",
            AggregateKind::Max => "max",
        }
    }
}

/// One total other than the count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aggregate {
    /// What it computes.
    pub kind: AggregateKind,
    /// Its column in the totals table.
    pub column: Ident,
    /// The sink column it is computed over.
    pub of: Ident,
    /// The type of that sink column.
    pub ty: ColumnType,
}

/// A checked totals table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TotalsSpec {
    /// The totals table, optionally schema-qualified.
    pub table: Vec<Ident>,
    /// The group columns (named as in the sink's table) and their types.
    pub group: Vec<(Ident, ColumnType)>,
    /// The count column.
    pub count: Ident,
    /// Sums, minimums and maximums.
    pub aggregates: Vec<Aggregate>,
    /// Create the table at start.
    pub create: bool,
    /// Seed from history once at start.
    pub seed: bool,
}

impl TotalsTableConfig {
    /// Checks the section against the sink's table; errors name the field.
    pub fn spec(&self, sink: &TableSpec) -> Result<TotalsSpec, String> {
        if sink.mode != WriteMode::Insert {
            return Err(
                "totals: only mode = \"append\" keeps totals (an upsert changes rows \
                        the totals already counted)"
                    .into(),
            );
        }
        let table = self
            .table
            .split('.')
            .map(|p| Ident::new(p).map_err(|e| format!("totals.table: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        if table == sink.table {
            return Err("totals.table: the totals need a table of their own".into());
        }
        if self.group.is_empty() {
            return Err("totals.group: name at least one column".into());
        }
        let mut group = Vec::new();
        for g in &self.group {
            let (name, ty) = sink_column(sink, g, "totals.group")?;
            let c = sink.columns.iter().find(|c| c.name == name).expect("found");
            if !c.required && !sink.key.contains(&name) {
                return Err(format!(
                    "totals.group: column `{name}` must be `required` (or a key column): a \
                     row without a group could not be counted"
                ));
            }
            group.push((name, ty));
        }
        let count = Ident::new(&self.count).map_err(|e| format!("totals.count: {e}"))?;
        let mut aggregates = Vec::new();
        for (kind, map) in [
            (AggregateKind::Sum, &self.sum),
            (AggregateKind::Min, &self.min),
            (AggregateKind::Max, &self.max),
        ] {
            let field = format!("totals.{}", kind.sql());
            for (column, of) in map {
                let column = Ident::new(column).map_err(|e| format!("{field}: {e}"))?;
                let (of, ty) = sink_column(sink, of, &field)?;
                check_type(kind, ty).map_err(|e| format!("{field}: column `{of}` {e}"))?;
                aggregates.push(Aggregate {
                    kind,
                    column,
                    of,
                    ty,
                });
            }
        }
        let spec = TotalsSpec {
            table,
            group,
            count,
            aggregates,
            create: self.create_table,
            seed: self.seed,
        };
        spec.check_names()?;
        Ok(spec)
    }
}

fn sink_column(sink: &TableSpec, name: &str, field: &str) -> Result<(Ident, ColumnType), String> {
    let name = Ident::new(name).map_err(|e| format!("{field}: {e}"))?;
    match sink.columns.iter().find(|c| c.name == name) {
        Some(c) => Ok((name, c.ty)),
        None => Err(format!("{field}: `{name}` is not among the sink's columns")),
    }
}

fn check_type(kind: AggregateKind, ty: ColumnType) -> Result<(), String> {
    use ColumnType::*;
    let ok = match kind {
        AggregateKind::Sum => matches!(ty, SmallInt | Int | Integer | Real | Numeric),
        AggregateKind::Min | AggregateKind::Max => !matches!(ty, Boolean | Json | Bytes),
    };
    if ok {
        Ok(())
    } else {
        Err(format!("is {ty:?}, which has no {}", kind.sql()))
    }
}

impl TotalsSpec {
    fn check_names(&self) -> Result<(), String> {
        let mut names: Vec<&Ident> = self.group.iter().map(|(g, _)| g).collect();
        names.push(&self.count);
        names.extend(self.aggregates.iter().map(|a| &a.column));
        for (i, n) in names.iter().enumerate() {
            if names[..i].contains(n) {
                return Err(format!("totals: column `{n}` is named twice"));
            }
        }
        Ok(())
    }

    /// The totals table, quoted.
    pub fn table_sql(&self) -> String {
        let parts: Vec<String> = self.table.iter().map(Ident::quoted).collect();
        parts.join(".")
    }

    fn group_list(&self) -> String {
        let g: Vec<String> = self.group.iter().map(|(g, _)| g.quoted()).collect();
        g.join(", ")
    }

    fn columns_list(&self) -> String {
        let mut cols = vec![self.group_list(), self.count.quoted()];
        cols.extend(self.aggregates.iter().map(|a| a.column.quoted()));
        cols.join(", ")
    }

    /// `count(*), sum(x), ...` over the rows of `from`, grouped: the totals of those rows.
    pub(crate) fn select_totals(&self, from: &str, filter: &str) -> String {
        let mut exprs = vec![self.group_list(), "count(*)".to_owned()];
        for a in &self.aggregates {
            let cast = match (a.kind, a.ty) {
                (AggregateKind::Sum, ColumnType::Real) => "",
                (AggregateKind::Sum, _) => "::numeric",
                _ => "",
            };
            exprs.push(format!("{}({}{cast})", a.kind.sql(), a.of.quoted()));
        }
        format!(
            "SELECT {} FROM {from}{filter} GROUP BY {g} ORDER BY {g}",
            exprs.join(", "),
            g = self.group_list()
        )
    }

    /// `CREATE TABLE IF NOT EXISTS` for the totals table.
    pub fn create_table(&self) -> String {
        let d = Dialect::Postgres;
        let mut cols: Vec<String> = self
            .group
            .iter()
            .map(|(g, ty)| format!("{} {} NOT NULL", g.quoted(), d.type_name(*ty)))
            .collect();
        cols.push(format!("{} BIGINT NOT NULL DEFAULT 0", self.count.quoted()));
        for a in &self.aggregates {
            let ty = match (a.kind, a.ty) {
                (AggregateKind::Sum, ColumnType::Real) => "DOUBLE PRECISION",
                (AggregateKind::Sum, _) => "NUMERIC",
                _ => d.type_name(a.ty),
            };
            cols.push(format!("{} {ty}", a.column.quoted()));
        }
        cols.push(format!("PRIMARY KEY ({})", self.group_list()));
        format!(
            "CREATE TABLE IF NOT EXISTS {} ({})",
            self.table_sql(),
            cols.join(", ")
        )
    }

    /// `insert` (an `INSERT ... ON CONFLICT DO NOTHING` into the sink's table) wrapped so that
    /// the rows it really inserted are added to the totals in the same statement; the
    /// statement returns how many rows were inserted.
    pub fn wrap_insert(&self, insert: &str) -> String {
        let mut returned: Vec<String> = self.group.iter().map(|(g, _)| g.quoted()).collect();
        for a in &self.aggregates {
            if !returned.contains(&a.of.quoted()) {
                returned.push(a.of.quoted());
            }
        }
        let count = self.count.quoted();
        let mut updates = vec![format!("{count} = tot.{count} + excluded.{count}")];
        for a in &self.aggregates {
            let c = a.column.quoted();
            updates.push(match a.kind {
                AggregateKind::Sum => {
                    format!("{c} = coalesce(tot.{c} + excluded.{c}, tot.{c}, excluded.{c})")
                }
                AggregateKind::Min => format!("{c} = LEAST(tot.{c}, excluded.{c})"),
                AggregateKind::Max => format!("{c} = GREATEST(tot.{c}, excluded.{c})"),
            });
        }
        format!(
            "WITH ins AS ({insert} RETURNING {}), tot AS (INSERT INTO {} AS tot ({}) {} \
             ON CONFLICT ({}) DO UPDATE SET {}) SELECT count(*) FROM ins",
            returned.join(", "),
            self.table_sql(),
            self.columns_list(),
            self.select_totals("ins", ""),
            self.group_list(),
            updates.join(", ")
        )
    }

    /// The seed: the totals of every row of `source` (the sink's table, quoted).
    pub(crate) fn seed_insert(&self, source: &str) -> String {
        let not_null: Vec<String> = self
            .group
            .iter()
            .map(|(g, _)| format!("{} IS NOT NULL", g.quoted()))
            .collect();
        format!(
            "INSERT INTO {} ({}) {}",
            self.table_sql(),
            self.columns_list(),
            self.select_totals(source, &format!(" WHERE {}", not_null.join(" AND ")))
        )
    }
}

#[cfg(test)]
mod tests;
