//! Errors of the embedded log.

/// What went wrong with the embedded log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// SQLite refused or failed an operation.
    #[error("embedded log database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The log's writer task is gone (the log was closed).
    #[error("embedded log is closed")]
    Closed,
    /// A group commit failed; nothing of it was written.
    #[error("embedded log write failed: {0}")]
    Write(String),
    /// A stored row could not be read back.
    #[error("embedded log row is corrupt: {0}")]
    Corrupt(String),
}

/// Result with the embedded log's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
