//! Which database errors are worth retrying, and which condemn a row.

use riverbed_core::Failure;

use crate::sqlgen::Dialect;

/// How a database error affects a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorClass {
    /// Retry later: connection loss, timeouts, lock conflicts, serialization failures, deadlocks,
    /// a read-only standby (after a failover), exhausted resources, and schema or permission
    /// problems an operator can fix without losing data.
    Transient(Failure),
    /// Some row is refused (constraint, bad value for its type, a trigger's refusal): isolate
    /// it by splitting the batch.
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

/// PostgreSQL SQLSTATE classes and the few codes that differ from their class. A retried
/// error costs time; a row error dead-letters data, so only errors a row can cause condemn it.
fn classify_sqlstate(code: &str, text: String) -> ErrorClass {
    let transient = || ErrorClass::Transient(Failure::unavailable(text.clone()));
    let row = || ErrorClass::Row(Failure::rejected(text.clone()));
    match code {
        // A deferred constraint checked at commit: a row's fault, like class 23.
        "40002" => return row(),
        // Lock not available, object in use: wait.
        "55P03" | "55006" => return transient(),
        _ => {}
    }
    match &code[..2] {
        // Data exceptions (bad values, invalid text for the type), integrity constraints,
        // WITH CHECK OPTION, a trigger that refuses the row (P0: RAISE), cardinality.
        "21" | "22" | "23" | "27" | "44" | "09" | "38" | "39" | "2F" | "P0" => row(),
        // Connection exceptions; invalid transaction state (25006 read-only transaction: a
        // standby after failover; 25P03 idle timeout); invalid statement name (a prepared
        // statement gone with its connection); authorization; transaction rollback
        // (serialization failure, deadlock); resources (disk full, too many connections);
        // object state; operator intervention (statement timeout, shutdown); system and
        // internal errors; snapshot too old; missing database or schema.
        "08" | "0B" | "25" | "26" | "28" | "2D" | "3B" | "3D" | "3F" | "40" | "53" | "55"
        | "57" | "58" | "72" | "F0" | "HV" | "XX" => transient(),
        // Syntax or access rule: a schema or permission an operator fixes without data loss.
        "42" => ErrorClass::Transient(Failure::new("schema", text)),
        // Anything else (program limits such as an oversized index row, unsupported values):
        // the statement's data is at fault; splitting finds the row.
        _ => row(),
    }
}

/// SQLite result codes (the primary code is the low byte of the extended one).
fn classify_sqlite(code: i64, text: String) -> ErrorClass {
    match code & 0xff {
        // PERM, ABORT, BUSY, LOCKED, NOMEM, READONLY, INTERRUPT, IOERR, CORRUPT, FULL,
        // CANTOPEN, PROTOCOL, SCHEMA (changed under the statement), AUTH, NOTADB
        3 | 4 | 5 | 6 | 7 | 8 | 9 | 10 | 11 | 13 | 14 | 15 | 17 | 23 | 26 => {
            ErrorClass::Transient(Failure::unavailable(text))
        }
        // ERROR: no such table / column, syntax: a schema problem.
        1 => ErrorClass::Transient(Failure::new("schema", text)),
        // CONSTRAINT, MISMATCH, TOOBIG, RANGE, and anything else: the row.
        _ => ErrorClass::Row(Failure::rejected(text)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transient(code: &str) -> bool {
        matches!(
            classify_sqlstate(code, String::new()),
            ErrorClass::Transient(_)
        )
    }

    #[test]
    fn connection_timeouts_serialization_deadlocks_and_failover_are_transient() {
        for code in [
            "08006", "08001", "40001", "40P01", "57014", "57P01", "53300", "53100", "55P03",
            "25006", "25P03", "26000", "28P01", "XX000", "58030", "42P01", "42501",
        ] {
            assert!(transient(code), "{code} should be retried");
        }
        assert!(matches!(
            classify(&sqlx::Error::PoolTimedOut, Dialect::Postgres),
            ErrorClass::Transient(_)
        ));
        assert!(matches!(
            classify(
                &sqlx::Error::Io(std::io::Error::other("reset")),
                Dialect::Postgres
            ),
            ErrorClass::Transient(_)
        ));
    }

    #[test]
    fn constraint_and_type_errors_condemn_the_row() {
        for code in [
            "23505", "23514", "23502", "23503", "22P02", "22001", "22003", "22007", "40002",
            "P0001", "44000", "21000", "54000",
        ] {
            assert!(!transient(code), "{code} is the row's fault");
        }
        let encode = sqlx::Error::Encode("bad".into());
        assert!(matches!(
            classify(&encode, Dialect::Postgres),
            ErrorClass::Row(_)
        ));
    }

    #[test]
    fn sqlite_codes() {
        // SQLITE_IOERR_READ, BUSY, SCHEMA, READONLY: retried.
        for code in [266, 5, 17, 8, 517] {
            assert!(
                matches!(
                    classify_sqlite(code, String::new()),
                    ErrorClass::Transient(_)
                ),
                "{code}"
            );
        }
        // SQLITE_CONSTRAINT_UNIQUE, CHECK, NOTNULL, MISMATCH, TOOBIG: the row.
        for code in [2067, 275, 1299, 20, 18] {
            assert!(
                matches!(classify_sqlite(code, String::new()), ErrorClass::Row(_)),
                "{code}"
            );
        }
    }
}
