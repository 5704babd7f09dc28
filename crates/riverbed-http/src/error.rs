//! The errors of the HTTP connector.

/// Everything that can go wrong building the HTTP sink.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration field is invalid; the message names the field.
    #[error("invalid http configuration: `{field}` {reason}")]
    Config {
        /// The field, as written in the configuration (`url`).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The HTTP client could not be built (TLS roots...).
    #[error("cannot build the http client: {0}")]
    Client(String),
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
