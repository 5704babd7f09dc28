//! Errors of the Redis sinks, and which Redis errors are worth retrying.

use redis::{ErrorKind, RedisError, ServerErrorKind};
use riverbed_core::Failure;

/// Why a Redis sink, the window counter or reconciliation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid; the text names the field.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Redis refused or could not be reached.
    #[error("redis error: {0}")]
    Redis(#[from] RedisError),
    /// PostgreSQL (the committed data totals are derived from) failed. Shown as the SQL
    /// error itself, which already says "database error".
    #[error(transparent)]
    Database(#[from] riverbed_sql::Error),
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::Database(riverbed_sql::Error::Database(e))
    }
}

/// A result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How a Redis error affects the messages of a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorClass {
    /// Retry later: connection refused or reset, timeouts, `LOADING`, `BUSY`, `TRYAGAIN`,
    /// `MASTERDOWN`, `READONLY`, `OOM`, `NOREPLICAS`, `MISCONF` (persistence failing), and
    /// permission or auth problems an operator can fix.
    Transient(Failure),
    /// Some message is refused for good (`WRONGTYPE`, a value that is not a number...):
    /// isolate it by splitting the batch.
    Permanent(Failure),
}

/// Server error codes that pass with time or an operator's fix, without losing data.
const TRANSIENT_CODES: &[&str] = &[
    "LOADING",
    "BUSY",
    "TRYAGAIN",
    "MASTERDOWN",
    "READONLY",
    "OOM",
    "NOREPLICAS",
    "MISCONF",
    "CLUSTERDOWN",
    "NOPERM",
    "NOAUTH",
    "WRONGPASS",
    "NOSCRIPT",
];

/// Classifies a Redis error.
pub fn classify(e: &RedisError) -> ErrorClass {
    let text = e.to_string();
    if e.is_io_error()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.code().is_some_and(|c| TRANSIENT_CODES.contains(&c))
    {
        return ErrorClass::Transient(Failure::unavailable(text));
    }
    match e.kind() {
        ErrorKind::Parse
        | ErrorKind::AuthenticationFailed
        | ErrorKind::ClusterConnectionNotFound
        | ErrorKind::Server(ServerErrorKind::BusyLoading | ServerErrorKind::TryAgain) => {
            ErrorClass::Transient(Failure::unavailable(text))
        }
        _ => ErrorClass::Permanent(Failure::rejected(text)),
    }
}

/// The error a script reported as text (`CODE detail`), as Redis would have answered it.
pub(crate) fn server_error(text: &str) -> RedisError {
    let (code, detail) = text.split_once(' ').unwrap_or((text, ""));
    redis::make_extension_error(code.to_owned(), Some(detail.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(code: &str) -> RedisError {
        redis::make_extension_error(code.to_owned(), Some("detail".into()))
    }

    #[test]
    fn busy_and_loading_are_transient_wrongtype_is_not() {
        assert!(matches!(
            classify(&server("BUSY")),
            ErrorClass::Transient(_)
        ));
        assert!(matches!(
            classify(&server("WRONGTYPE")),
            ErrorClass::Permanent(_)
        ));
        let io: RedisError =
            std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset").into();
        assert!(matches!(classify(&io), ErrorClass::Transient(_)));
        let refused: RedisError =
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused").into();
        assert!(matches!(classify(&refused), ErrorClass::Transient(_)));
    }
}
