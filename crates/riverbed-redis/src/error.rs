//! Errors of the Redis sinks, and which Redis errors are worth retrying.

use redis::{ErrorKind, RedisError, ServerErrorKind};
use riverbed_core::{Failure, Outcome};

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
    /// The totals source (the committed data totals are taken from, such as PostgreSQL)
    /// failed. Shown as the source's own error (PostgreSQL's says "database error").
    #[error(transparent)]
    Source(#[from] riverbed_core::TotalsError),
}

/// A result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How a Redis error affects the messages of a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorClass {
    /// Redis cannot take writes now, whatever the message: connection refused, reset or timed
    /// out, `LOADING`, `BUSY`, `MASTERDOWN`, `READONLY` (a replica after a failover), `OOM`,
    /// `NOREPLICAS`, `MISCONF` (persistence failing), `CLUSTERDOWN`, and permission or auth
    /// problems an operator fixes. No attempt is used up: the partition waits.
    Unavailable(Failure),
    /// Retry later, counting an attempt: `TRYAGAIN` (a slot moving), `NOSCRIPT`.
    Transient(Failure),
    /// Some message is refused for good (`WRONGTYPE`, a value that is not a number...):
    /// isolate it by splitting the batch.
    Permanent(Failure),
}

impl ErrorClass {
    /// The outcome of the messages this error stopped.
    pub fn into_outcome(self) -> Outcome {
        match self {
            ErrorClass::Unavailable(f) => Outcome::Unavailable(f),
            ErrorClass::Transient(f) => Outcome::Transient(f),
            ErrorClass::Permanent(f) => Outcome::Permanent(f),
        }
    }
}

/// Server error codes that say Redis cannot take writes now, whatever the message: they pass
/// with time or an operator's fix, without losing data.
const UNAVAILABLE_CODES: &[&str] = &[
    "LOADING",
    "BUSY",
    "MASTERDOWN",
    "READONLY",
    "OOM",
    "NOREPLICAS",
    "MISCONF",
    "CLUSTERDOWN",
    "NOPERM",
    "NOAUTH",
    "WRONGPASS",
];

/// Server error codes that pass by themselves on a later try.
const TRANSIENT_CODES: &[&str] = &["TRYAGAIN", "NOSCRIPT"];

/// Classifies a Redis error.
pub fn classify(e: &RedisError) -> ErrorClass {
    let text = e.to_string();
    if e.is_io_error()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.code().is_some_and(|c| UNAVAILABLE_CODES.contains(&c))
    {
        return ErrorClass::Unavailable(Failure::unavailable(text));
    }
    if e.code().is_some_and(|c| TRANSIENT_CODES.contains(&c)) {
        return ErrorClass::Transient(Failure::new("transient", text));
    }
    match e.kind() {
        ErrorKind::AuthenticationFailed
        | ErrorKind::ClusterConnectionNotFound
        | ErrorKind::Server(ServerErrorKind::BusyLoading) => {
            ErrorClass::Unavailable(Failure::unavailable(text))
        }
        ErrorKind::Parse | ErrorKind::Server(ServerErrorKind::TryAgain) => {
            ErrorClass::Transient(Failure::new("transient", text))
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
    fn an_unreachable_or_loading_redis_is_unavailable_wrongtype_is_permanent() {
        for code in ["BUSY", "LOADING", "READONLY", "MASTERDOWN", "OOM", "NOAUTH"] {
            assert!(
                matches!(classify(&server(code)), ErrorClass::Unavailable(_)),
                "{code}"
            );
        }
        assert!(matches!(
            classify(&server("TRYAGAIN")),
            ErrorClass::Transient(_)
        ));
        assert!(matches!(
            classify(&server("WRONGTYPE")),
            ErrorClass::Permanent(_)
        ));
        let io: RedisError =
            std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset").into();
        assert!(matches!(classify(&io), ErrorClass::Unavailable(_)));
        let refused: RedisError =
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused").into();
        assert!(matches!(classify(&refused), ErrorClass::Unavailable(_)));
    }
}
