//! The errors of the NATS connector.

/// Everything that can go wrong in the NATS connector.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration field is invalid; the message names the field.
    #[error("invalid nats configuration: `{field}` {reason}")]
    Config {
        /// The field, as written in the configuration (`deliver`).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No server accepted a connection.
    #[error("could not connect to {url}: {reason}")]
    Connect {
        /// The (redacted) first server URL.
        url: String,
        /// The client's error.
        reason: String,
    },
    /// A JetStream API request failed (stream or consumer lookup, creation).
    #[error("jetstream refused to {action}: {reason}")]
    JetStream {
        /// What was asked, such as "create consumer `orders` on stream `ORDERS`".
        action: String,
        /// The server's or client's answer.
        reason: String,
    },
}

/// The connector's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A configuration error for `field`.
pub(crate) fn config(field: &str, reason: impl Into<String>) -> Error {
    Error::Config {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

/// A JetStream error while doing `action`.
pub(crate) fn jetstream(action: impl Into<String>, reason: impl std::fmt::Display) -> Error {
    Error::JetStream {
        action: action.into(),
        reason: reason.to_string(),
    }
}
