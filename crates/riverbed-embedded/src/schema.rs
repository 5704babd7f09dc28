//! The log's tables and how the database file is opened.

use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};

use crate::error::Result;

/// Tables of the log. Offsets come from an AUTOINCREMENT rowid: strictly increasing, never reused.
pub(crate) const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS log (
        offset INTEGER PRIMARY KEY AUTOINCREMENT,
        topic TEXT NOT NULL,
        key TEXT,
        payload BLOB NOT NULL,
        headers TEXT,
        appended_at_ms INTEGER NOT NULL,
        message_id TEXT
    )",
    "CREATE INDEX IF NOT EXISTS log_topic_offset ON log (topic, offset)",
    "CREATE TABLE IF NOT EXISTS positions (
        consumer TEXT NOT NULL,
        topic TEXT NOT NULL,
        committed INTEGER NOT NULL,
        delivered INTEGER NOT NULL,
        updated_at_ms INTEGER NOT NULL,
        PRIMARY KEY (consumer, topic)
    )",
    "CREATE TABLE IF NOT EXISTS dead_letters (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        topic TEXT NOT NULL,
        log_offset INTEGER,
        message_id TEXT,
        key TEXT,
        payload BLOB NOT NULL,
        headers TEXT,
        reason TEXT NOT NULL,
        error TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        stage TEXT NOT NULL,
        first_failure_ms INTEGER NOT NULL,
        last_failure_ms INTEGER NOT NULL,
        created_at_ms INTEGER NOT NULL
    )",
    // A message redelivered after a crash and refused again is one dead letter, not two.
    "CREATE UNIQUE INDEX IF NOT EXISTS dead_letters_origin ON dead_letters (topic, log_offset)",
];

/// How durable each commit is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// `synchronous=FULL`: a commit survives power loss (the default).
    #[default]
    Full,
    /// `synchronous=NORMAL`: a commit survives a process crash, maybe not a power loss.
    Normal,
}

/// Connect options for a log or table file: WAL, the chosen durability, a busy timeout.
pub fn connect_options(path: &Path, durability: Durability) -> Result<SqliteConnectOptions> {
    let sync = match durability {
        Durability::Full => SqliteSynchronous::Full,
        Durability::Normal => SqliteSynchronous::Normal,
    };
    Ok(SqliteConnectOptions::from_str("sqlite://")?
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(sync)
        .busy_timeout(Duration::from_secs(30)))
}

/// Milliseconds since the Unix epoch.
pub(crate) fn epoch_ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The time at `ms` milliseconds since the Unix epoch.
pub(crate) fn from_epoch_ms(ms: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

/// Headers as stored: JSON text, or NULL when there are none.
pub(crate) fn encode_headers(h: &riverbed_core::Headers) -> Option<String> {
    (!h.is_empty()).then(|| serde_json::to_string(h).expect("headers always serialise"))
}

/// Headers read back from their JSON text.
pub(crate) fn decode_headers(s: Option<&str>) -> Result<riverbed_core::Headers> {
    match s {
        None => Ok(Default::default()),
        Some(s) => {
            serde_json::from_str(s).map_err(|e| crate::Error::Corrupt(format!("headers: {e}")))
        }
    }
}
