//! A table as a sink sees it: columns, where each value comes from, the key and the write mode.

use std::fmt;

use riverbed_core::{Failure, Message};
use serde::{Deserialize, Serialize};

use crate::sqlgen::Dialect;

/// SQL column types a sink can create and bind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    /// Text.
    Text,
    /// 16-bit integer (PostgreSQL `smallint`).
    #[serde(rename = "smallint")]
    SmallInt,
    /// 32-bit integer (PostgreSQL `integer`).
    Int,
    /// 64-bit integer (PostgreSQL `bigint`).
    #[serde(alias = "bigint")]
    Integer,
    /// Double precision float.
    Real,
    /// Exact decimal (PostgreSQL `numeric`; SQLite `NUMERIC` affinity).
    Numeric,
    /// Boolean.
    Boolean,
    /// JSON document (PostgreSQL `jsonb`, SQLite text).
    Json,
    /// Raw bytes.
    Bytes,
    /// A point in time (PostgreSQL `timestamptz`; SQLite integer milliseconds since the epoch).
    Timestamp,
    /// A calendar date, `YYYY-MM-DD` (PostgreSQL `date`; SQLite text).
    Date,
    /// A time of day without offset (PostgreSQL `time`; SQLite text).
    Time,
}

/// Where a column's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueSource {
    /// A JSON pointer into the payload.
    Pointer(String),
    /// The message key.
    Key,
    /// The whole payload.
    Payload,
    /// The source position (log or stream offset).
    Position,
    /// The producer's message id.
    MessageId,
    /// The routing key or subject.
    Subject,
    /// When this process received the message.
    ReceivedAt,
    /// A header.
    Header(String),
    /// True when the JSON field at `pointer` equals `value` (a string), else false: the
    /// tombstone flag of a delete (`/op` equal to `delete`).
    Equals {
        /// The JSON pointer.
        pointer: String,
        /// The value that makes the flag true.
        value: String,
    },
}

impl std::str::FromStr for ValueSource {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            p if p.starts_with('/') => ValueSource::Pointer(p.to_owned()),
            "$key" => ValueSource::Key,
            "$payload" => ValueSource::Payload,
            "$position" => ValueSource::Position,
            "$message_id" => ValueSource::MessageId,
            "$subject" => ValueSource::Subject,
            "$received_at" => ValueSource::ReceivedAt,
            h if h.starts_with("$header.") && h.len() > 8 => ValueSource::Header(h[8..].to_owned()),
            other => {
                return Err(format!(
                    "`{other}` is not a value source: use a JSON pointer (\"/field\") or one of $key, $payload, $position, $message_id, $subject, $received_at, $header.NAME"
                ));
            }
        })
    }
}

impl fmt::Display for ValueSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValueSource::Pointer(p) => f.write_str(p),
            ValueSource::Key => f.write_str("$key"),
            ValueSource::Payload => f.write_str("$payload"),
            ValueSource::Position => f.write_str("$position"),
            ValueSource::MessageId => f.write_str("$message_id"),
            ValueSource::Subject => f.write_str("$subject"),
            ValueSource::ReceivedAt => f.write_str("$received_at"),
            ValueSource::Header(h) => write!(f, "$header.{h}"),
            ValueSource::Equals { pointer, value } => write!(f, "{pointer} == {value:?}"),
        }
    }
}

/// One column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Its name (a validated identifier).
    pub name: Ident,
    /// Its SQL type.
    pub ty: ColumnType,
    /// Where its value comes from.
    pub from: ValueSource,
    /// A missing value dead-letters the message instead of writing NULL.
    pub required: bool,
}

/// How rows are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteMode {
    /// Insert; a row whose key exists already is skipped (redelivery never duplicates).
    Insert,
    /// Insert or update by key; with a version column, only a newer version updates.
    Upsert {
        /// Column compared with `<` before an update is applied.
        version: Option<Ident>,
        /// A boolean column that marks deletes: a row whose flag is true is written as a
        /// tombstone (key, version, flag; every other column NULL), so an older update that
        /// arrives late cannot bring the entity back. On equal versions a delete wins.
        tombstone: Option<Ident>,
    },
}

/// A checked SQL identifier: ASCII letters, digits and `_`, not starting with a digit, at most
/// 63 characters. Always quoted when written into SQL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Ident(String);

impl Ident {
    /// Checks `s`.
    pub fn new(s: &str) -> Result<Self, String> {
        let ok = !s.is_empty()
            && s.len() <= 63
            && !s.starts_with(|c: char| c.is_ascii_digit())
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if ok {
            Ok(Ident(s.to_owned()))
        } else {
            Err(format!(
                "`{s}` is not a valid SQL identifier (letters, digits and _, at most 63, not starting with a digit)"
            ))
        }
    }

    /// The identifier as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The identifier, double-quoted for SQL.
    pub fn quoted(&self) -> String {
        format!("\"{}\"", self.0)
    }
}

impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A table sink's complete, checked description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSpec {
    /// Table name, optionally schema-qualified (`schema.table`).
    pub table: Vec<Ident>,
    /// Columns in insert order.
    pub columns: Vec<Column>,
    /// Names of the key columns (the conflict target).
    pub key: Vec<Ident>,
    /// Insert or upsert.
    pub mode: WriteMode,
    /// Create the table at start if it does not exist.
    pub create: bool,
}

impl TableSpec {
    /// The table name, quoted.
    pub fn table_sql(&self) -> String {
        self.table
            .iter()
            .map(Ident::quoted)
            .collect::<Vec<_>>()
            .join(".")
    }

    /// Checks that column names are unique and that key, version and tombstone columns exist.
    pub fn check(&self) -> Result<(), String> {
        if self.columns.is_empty() {
            return Err("a table sink needs at least one column".into());
        }
        for (i, c) in self.columns.iter().enumerate() {
            if self.columns[..i].iter().any(|o| o.name == c.name) {
                return Err(format!("column `{}` is declared twice", c.name));
            }
        }
        for k in &self.key {
            if !self.columns.iter().any(|c| &c.name == k) {
                return Err(format!("key column `{k}` is not among the columns"));
            }
        }
        if let WriteMode::Upsert { version, tombstone } = &self.mode {
            if self.key.is_empty() {
                return Err("upsert needs a key".into());
            }
            if let Some(v) = version
                && !self.columns.iter().any(|c| &c.name == v)
            {
                return Err(format!("version column `{v}` is not among the columns"));
            }
            if let Some(t) = tombstone {
                if version.is_none() {
                    return Err("tombstones need a version column".into());
                }
                match self.columns.iter().find(|c| &c.name == t) {
                    Some(c) if c.ty == ColumnType::Boolean => {}
                    Some(_) => return Err(format!("tombstone column `{t}` must be boolean")),
                    None => return Err(format!("tombstone column `{t}` is not among the columns")),
                }
            }
        }
        Ok(())
    }

    /// The index of the version column, if upserts are versioned.
    pub fn version_index(&self) -> Option<usize> {
        match &self.mode {
            WriteMode::Upsert {
                version: Some(v), ..
            } => self.columns.iter().position(|c| &c.name == v),
            _ => None,
        }
    }

    /// The index of the tombstone column, if deletes keep tombstones.
    pub fn tombstone_index(&self) -> Option<usize> {
        match &self.mode {
            WriteMode::Upsert {
                tombstone: Some(t), ..
            } => self.columns.iter().position(|c| &c.name == t),
            _ => None,
        }
    }

    /// True when column `i` keeps its value in a tombstone (key, version and the flag itself).
    pub fn kept_in_tombstone(&self, i: usize) -> bool {
        self.key_indexes().contains(&i)
            || self.version_index() == Some(i)
            || self.tombstone_index() == Some(i)
    }

    /// The indexes of the key columns.
    pub fn key_indexes(&self) -> Vec<usize> {
        self.key
            .iter()
            .filter_map(|k| self.columns.iter().position(|c| &c.name == k))
            .collect()
    }
}

/// A value ready to bind.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    /// NULL.
    Null,
    /// Integer.
    Int(i64),
    /// Float.
    Float(f64),
    /// Text (also decimals, bound as text and cast).
    Text(String),
    /// Boolean.
    Bool(bool),
    /// Bytes.
    Bytes(Vec<u8>),
    /// JSON.
    Json(serde_json::Value),
    /// A point in time.
    Timestamp(jiff::Timestamp),
    /// A calendar date.
    Date(jiff::civil::Date),
    /// A time of day.
    Time(jiff::civil::Time),
}

impl SqlValue {
    /// Orders two values of a version column: numbers numerically, text lexically.
    pub fn compare(&self, other: &SqlValue) -> std::cmp::Ordering {
        use SqlValue::*;
        match (self, other) {
            (Int(a), Int(b)) => a.cmp(b),
            (Float(a), Float(b)) => a.total_cmp(b),
            (Int(a), Float(b)) => (*a as f64).total_cmp(b),
            (Float(a), Int(b)) => a.total_cmp(&(*b as f64)),
            (Timestamp(a), Timestamp(b)) => a.cmp(b),
            (Date(a), Date(b)) => a.cmp(b),
            (Time(a), Time(b)) => a.cmp(b),
            (Text(a), Text(b)) => a.cmp(b),
            (Null, Null) => std::cmp::Ordering::Equal,
            (Null, _) => std::cmp::Ordering::Less,
            (_, Null) => std::cmp::Ordering::Greater,
            (a, b) => format!("{a:?}").cmp(&format!("{b:?}")),
        }
    }

    /// Feeds the value to a hasher (equal values hash equally), for grouping rows by key.
    pub fn hash_into(&self, h: &mut impl std::hash::Hasher) {
        use std::hash::Hash;
        std::mem::discriminant(self).hash(h);
        match self {
            SqlValue::Null => {}
            SqlValue::Int(i) => i.hash(h),
            SqlValue::Timestamp(t) => t.hash(h),
            SqlValue::Date(d) => d.hash(h),
            SqlValue::Time(t) => t.hash(h),
            SqlValue::Float(f) => f.to_bits().hash(h),
            SqlValue::Text(s) => s.hash(h),
            SqlValue::Bool(b) => b.hash(h),
            SqlValue::Bytes(b) => b.hash(h),
            SqlValue::Json(j) => j.to_string().hash(h),
        }
    }
}

/// Extracts every column value of a message for a database of dialect `d`; a missing required
/// value or a value its column cannot keep exactly is a permanent failure of that message.
pub fn row_of(spec: &TableSpec, msg: &Message, d: Dialect) -> Result<Vec<SqlValue>, Failure> {
    let needs_body = spec.columns.iter().any(|c| {
        matches!(c.from, ValueSource::Pointer(_) | ValueSource::Equals { .. })
            || (c.from == ValueSource::Payload && c.ty == ColumnType::Json)
    });
    let decoded;
    let body = match msg.json() {
        Some(b) => Some(b),
        None if needs_body => {
            decoded = serde_json::from_slice::<serde_json::Value>(&msg.payload)
                .map_err(|e| Failure::malformed(format!("payload is not valid JSON: {e}")))?;
            Some(&decoded)
        }
        None => None,
    };
    let key_idx = spec.key_indexes();
    let deleted = match spec.tombstone_index() {
        Some(t) => {
            crate::convert::value_of(&spec.columns[t], msg, body, d)? == SqlValue::Bool(true)
        }
        None => false,
    };
    let mut row = Vec::with_capacity(spec.columns.len());
    for (i, c) in spec.columns.iter().enumerate() {
        if deleted && !spec.kept_in_tombstone(i) {
            row.push(SqlValue::Null);
            continue;
        }
        let v = crate::convert::value_of(c, msg, body, d)?;
        let needed =
            c.required || key_idx.contains(&i) || (deleted && spec.version_index() == Some(i));
        if v == SqlValue::Null && needed {
            return Err(Failure::new(
                "missing_field",
                format!("column `{}` has no value at {}", c.name, c.from),
            ));
        }
        row.push(v);
    }
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_column_declared_twice_is_refused() {
        let col = |n: &str| Column {
            name: Ident::new(n).unwrap(),
            ty: ColumnType::Text,
            from: ValueSource::Key,
            required: false,
        };
        let mut spec = TableSpec {
            table: vec![Ident::new("t").unwrap()],
            columns: vec![col("id"), col("a")],
            key: vec![Ident::new("id").unwrap()],
            mode: WriteMode::Insert,
            create: true,
        };
        assert_eq!(spec.check(), Ok(()));
        spec.columns.push(col("a"));
        assert_eq!(spec.check(), Err("column `a` is declared twice".into()));
    }
}
