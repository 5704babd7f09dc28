//! Which database errors are worth retrying, and which condemn a row.

use riverbed_core::Failure;

use crate::sqlgen::Dialect;

/// How a database error affects a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorClass {
    /// The database cannot be reached: connection refused or lost, pool timeout, the server
    /// shutting down or refusing connections (57P01-57P03), exhausted resources (53xxx), a
    /// read-only standby after a failover. Not the batch's fault: no attempt is used up.
    Unavailable(Failure),
    /// Retry later, counting an attempt: lock conflicts, serialization failures, deadlocks,
    /// statement timeouts, and schema or permission problems an operator can fix without
    /// losing data.
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
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => {
            ErrorClass::Unavailable(Failure::unavailable(e.to_string()))
        }
        _ => ErrorClass::Transient(Failure::new("transient", e.to_string())),
    }
}

/// PostgreSQL SQLSTATE classes and the few codes that differ from their class. A retried
/// error costs time; a row error dead-letters data, so only errors a row can cause condemn it.
fn classify_sqlstate(code: &str, text: String) -> ErrorClass {
    let transient = || ErrorClass::Transient(Failure::new("transient", text.clone()));
    let unavailable = || ErrorClass::Unavailable(Failure::unavailable(text.clone()));
    let row = || ErrorClass::Row(Failure::rejected(text.clone()));
    match code {
        // Admin shutdown, crash shutdown, cannot connect now; read-only transaction (a standby
        // after a failover): the server is not there to write to.
        "57P01" | "57P02" | "57P03" | "25006" => return unavailable(),
        // A deferred constraint checked at commit: a row's fault, like class 23.
        "40002" => return row(),
        // Lock not available, object in use: wait.
        "55P03" | "55006" => return transient(),
        _ => {}
    }
    match &code[..2] {
        // Connection exceptions; insufficient resources (too many connections, disk full,
        // out of memory); system errors (I/O); authorization (a rotated password); a missing
        // database or schema; a syntax or access rule (a table or grant an operator fixes): no
        // message is at fault, so none may use up its attempts or be dead-lettered for it.
        "08" | "53" | "58" | "28" | "3D" | "3F" => unavailable(),
        "42" => ErrorClass::Unavailable(Failure::new("schema", text)),
        // Data exceptions (bad values, invalid text for the type), integrity constraints,
        // WITH CHECK OPTION, a trigger that refuses the row (P0: RAISE), cardinality.
        "21" | "22" | "23" | "27" | "44" | "09" | "38" | "39" | "2F" | "P0" => row(),
        // Invalid transaction state (25P03 idle timeout); invalid statement name (a prepared
        // statement gone with its connection); transaction rollback (serialization failure,
        // deadlock); object state; operator intervention (statement timeout); internal
        // errors; snapshot too old.
        "0B" | "25" | "26" | "2D" | "3B" | "40" | "55" | "57" | "72" | "F0" | "HV" | "XX" => {
            transient()
        }
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
            ErrorClass::Transient(_) | ErrorClass::Unavailable(_)
        )
    }

    fn unavailable(code: &str) -> bool {
        matches!(
            classify_sqlstate(code, String::new()),
            ErrorClass::Unavailable(_)
        )
    }

    #[test]
    fn an_unreachable_server_is_unavailable_not_a_failed_attempt() {
        for code in [
            "08006", "08001", "57P01", "57P02", "57P03", "53300", "53100", "25006", "28P01",
            "3D000", "42P01",
        ] {
            assert!(
                unavailable(code),
                "{code} says the server cannot be reached"
            );
        }
        for code in ["40001", "40P01", "57014", "55P03", "XX000"] {
            assert!(
                !unavailable(code),
                "{code} is the statement's trouble, an attempt"
            );
        }
        for e in [
            sqlx::Error::PoolTimedOut,
            sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
        ] {
            assert!(matches!(
                classify(&e, Dialect::Postgres),
                ErrorClass::Unavailable(_)
            ));
        }
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
            ErrorClass::Unavailable(_)
        ));
        assert!(matches!(
            classify(
                &sqlx::Error::Io(std::io::Error::other("reset")),
                Dialect::Postgres
            ),
            ErrorClass::Unavailable(_)
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
                    ErrorClass::Transient(_) | ErrorClass::Unavailable(_)
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
