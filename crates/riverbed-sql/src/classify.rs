//! Which database errors are worth retrying, and which condemn a row.

use riverbed_core::Failure;

use crate::sqlgen::Dialect;

/// How a database error affects a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorClass {
    /// Retry later: connection loss, timeouts, lock conflicts, serialization failures, deadlocks,
    /// and schema or permission problems an operator can fix without losing data.
    Transient(Failure),
    /// Some row is refused (constraint, bad value): isolate it by splitting the batch.
    Row(Failure),
}

/// Classifies an error from a database of dialect `d`.
pub fn classify(e: &sqlx::Error, d: Dialect) -> ErrorClass {
    match e {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            let text = format!("{} (code {code})", db.message());
            match d {
                Dialect::Postgres if code.len() == 5 => classify_sqlstate(&code, text),
                Dialect::Postgres => ErrorClass::Row(Failure::rejected(text)),
                Dialect::Sqlite => classify_sqlite(code.parse().unwrap_or(0), text),
            }
        }
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Encode(_)
        | sqlx::Error::TypeNotFound { .. } => ErrorClass::Row(Failure::rejected(e.to_string())),
        _ => ErrorClass::Transient(Failure::unavailable(e.to_string())),
    }
}

/// PostgreSQL SQLSTATE classes.
fn classify_sqlstate(code: &str, text: String) -> ErrorClass {
    match &code[..2] {
        "22" | "23" => ErrorClass::Row(Failure::rejected(text)),
        "08" | "40" | "53" | "55" | "57" | "58" => {
            ErrorClass::Transient(Failure::unavailable(text))
        }
        "42" => ErrorClass::Transient(Failure::new("schema", text)),
        _ => ErrorClass::Row(Failure::rejected(text)),
    }
}

/// SQLite result codes (the primary code is the low byte of the extended one).
fn classify_sqlite(code: i64, text: String) -> ErrorClass {
    match code & 0xff {
        // BUSY, LOCKED, NOMEM, IOERR, FULL, CANTOPEN, PROTOCOL, READONLY
        5 | 6 | 7 | 10 | 13 | 14 | 15 | 8 => ErrorClass::Transient(Failure::unavailable(text)),
        // CONSTRAINT, MISMATCH, TOOBIG, RANGE
        19 | 20 | 18 | 25 => ErrorClass::Row(Failure::rejected(text)),
        // ERROR: no such table / column, syntax: a schema problem.
        1 => ErrorClass::Transient(Failure::new("schema", text)),
        _ => ErrorClass::Row(Failure::rejected(text)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_and_sqlite_codes() {
        assert!(matches!(
            classify_sqlstate("40P01", String::new()),
            ErrorClass::Transient(_)
        ));
        assert!(matches!(
            classify_sqlstate("23505", String::new()),
            ErrorClass::Row(_)
        ));
        assert!(matches!(
            classify_sqlstate("08006", String::new()),
            ErrorClass::Transient(_)
        ));
        assert!(matches!(
            classify(&sqlx::Error::PoolTimedOut, Dialect::Postgres),
            ErrorClass::Transient(_)
        ));
        assert!(matches!(
            classify_sqlstate("40001", String::new()),
            ErrorClass::Transient(_)
        ));
        assert!(matches!(
            classify_sqlstate("57P01", String::new()),
            ErrorClass::Transient(_)
        ));
        assert!(matches!(
            classify_sqlite(517, String::new()),
            ErrorClass::Transient(_)
        ));
        assert!(matches!(
            classify_sqlite(1299, String::new()),
            ErrorClass::Row(_)
        ));
    }
}
