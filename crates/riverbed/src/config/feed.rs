//! `[feed]`: producer tracking for a sports-style feed (see `crate::feed`), as written and
//! as checked.

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::check::Checker;
use super::load::ConfigError;
use super::raw::SourceKind;
use riverbed_sql::{Ident, PostgresConnectionConfig};

/// How control messages are recognised and read (JSON pointers and `type` values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Messages {
    /// The field telling a message's type.
    pub type_field: String,
    /// The type of alives.
    pub alive: String,
    /// The type of `snapshot_complete` messages.
    pub snapshot_complete: String,
    /// The producer's id.
    pub producer: String,
    /// An alive's timestamp (milliseconds).
    pub timestamp: String,
    /// An alive's `subscribed` flag (1/0 or true/false).
    pub subscribed: String,
    /// A `snapshot_complete`'s request id.
    pub request_id: String,
}

/// A checked `[feed]` section.
#[derive(Debug, Clone)]
pub struct FeedPlan {
    /// The feed's name (in the state table).
    pub name: String,
    /// The producers tracked.
    pub producers: Vec<String>,
    /// Down without an alive for this long.
    pub alive_timeout: Duration,
    /// The recovery URL template (`{producer}` replaced).
    pub recovery_url: String,
    /// At most one request per producer in this time.
    pub min_interval: Duration,
    /// A recovery without its `snapshot_complete` after this long is asked again.
    pub recovery_timeout: Duration,
    /// One HTTP request's time limit.
    pub request_timeout: Duration,
    /// The state table's database.
    pub postgres: PostgresConnectionConfig,
    /// The state table.
    pub table: Ident,
    /// How control messages look.
    pub messages: Messages,
}

/// `[feed]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedSection {
    /// The feed's name: its rows in the state table (several pipelines may share one table).
    pub name: Spanned<String>,
    /// The producers tracked (ids as the messages carry them: `[1, 3]` or `["pre", "live"]`).
    pub producers: Spanned<Vec<ProducerId>>,
    /// A producer without an alive for this long is down (default 20s; the feed sends one
    /// every 10 s).
    #[serde(default = "default_alive_timeout", with = "humantime_serde")]
    pub alive_timeout: Duration,
    /// The provider's recovery endpoint.
    pub recovery: Spanned<RecoverySection>,
    /// Where the last good alive of each producer is stored (and its state).
    pub state: Spanned<StateSection>,
    /// How control messages are recognised (defaults: the simulator's and the usual shape).
    #[serde(default)]
    pub messages: MessagesSection,
}

/// A producer id: a number or a string in the file, compared as text.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ProducerId {
    /// A numeric id.
    Number(u64),
    /// A named id.
    Text(String),
}

impl ProducerId {
    fn text(&self) -> String {
        match self {
            ProducerId::Number(n) => n.to_string(),
            ProducerId::Text(s) => s.clone(),
        }
    }
}

/// `[feed.recovery]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecoverySection {
    /// `POST` target, `{producer}` replaced by the producer's id; `after` (ms) and
    /// `request_id` are added to its query.
    pub url: Spanned<String>,
    /// At most one request per producer in this time (default 30s).
    #[serde(default = "default_min_interval", with = "humantime_serde")]
    pub min_interval: Duration,
    /// A recovery whose `snapshot_complete` has not come after this long is given up: the
    /// producer stays down and the next good alive asks again (default 5m).
    #[serde(default = "default_recovery_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// One HTTP request's time limit (default 10s).
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
}

/// `[feed.state]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateSection {
    /// The PostgreSQL database.
    pub postgres: riverbed_sql::PostgresConnectionConfig,
    /// The table (created if missing; default `riverbed_feed_producers`).
    #[serde(default = "default_table")]
    pub table: Spanned<String>,
}

/// `[feed.messages]`: JSON pointers and type names.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessagesSection {
    /// The field telling a message's type (default "/type").
    #[serde(default = "d_type")]
    pub type_field: Spanned<String>,
    /// The type of alives (default "alive").
    #[serde(default = "d_alive")]
    pub alive: String,
    /// The type of snapshot completions (default "snapshot_complete").
    #[serde(default = "d_snapshot")]
    pub snapshot_complete: String,
    /// The producer id (default "/producer").
    #[serde(default = "d_producer")]
    pub producer: Spanned<String>,
    /// An alive's timestamp in milliseconds (default "/timestamp").
    #[serde(default = "d_timestamp")]
    pub timestamp: Spanned<String>,
    /// An alive's subscribed flag, 1/0 (default "/subscribed").
    #[serde(default = "d_subscribed")]
    pub subscribed: Spanned<String>,
    /// A snapshot completion's request id (default "/request_id").
    #[serde(default = "d_request_id")]
    pub request_id: Spanned<String>,
}

impl Default for MessagesSection {
    fn default() -> Self {
        MessagesSection {
            type_field: d_type(),
            alive: d_alive(),
            snapshot_complete: d_snapshot(),
            producer: d_producer(),
            timestamp: d_timestamp(),
            subscribed: d_subscribed(),
            request_id: d_request_id(),
        }
    }
}

fn spanned(s: &str) -> Spanned<String> {
    Spanned::new(0..0, s.to_owned())
}
fn d_type() -> Spanned<String> {
    spanned("/type")
}
fn d_alive() -> String {
    "alive".into()
}
fn d_snapshot() -> String {
    "snapshot_complete".into()
}
fn d_producer() -> Spanned<String> {
    spanned("/producer")
}
fn d_timestamp() -> Spanned<String> {
    spanned("/timestamp")
}
fn d_subscribed() -> Spanned<String> {
    spanned("/subscribed")
}
fn d_request_id() -> Spanned<String> {
    spanned("/request_id")
}
fn default_table() -> Spanned<String> {
    spanned("riverbed_feed_producers")
}
fn default_alive_timeout() -> Duration {
    Duration::from_secs(20)
}
fn default_min_interval() -> Duration {
    Duration::from_secs(30)
}
fn default_recovery_timeout() -> Duration {
    Duration::from_secs(300)
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(10)
}

/// Checks `[feed]` against the source.
pub(super) fn check_feed(
    c: &Checker<'_>,
    section: Option<&Spanned<FeedSection>>,
    source: &SourceKind,
) -> Result<Option<FeedPlan>, ConfigError> {
    let Some(section) = section else {
        return Ok(None);
    };
    let f = section.get_ref();
    if !matches!(source, SourceKind::Amqp(_)) {
        return c.err(
            section.span(),
            "`[feed]` tracks producers on an `amqp` source (it must see its reconnects)",
        );
    }
    if f.name.get_ref().trim().is_empty() {
        return c.err(f.name.span(), "`feed.name` must not be empty");
    }
    let producers: Vec<String> = f.producers.get_ref().iter().map(ProducerId::text).collect();
    if producers.is_empty() {
        return c.err(
            f.producers.span(),
            "`feed.producers` needs at least one producer",
        );
    }
    if let Some(dup) = producers
        .iter()
        .enumerate()
        .find(|(i, p)| producers[..*i].contains(p))
    {
        return c.err(
            f.producers.span(),
            format!("`feed.producers` lists `{}` twice", dup.1),
        );
    }
    if f.alive_timeout < Duration::from_millis(100) {
        return c.err(
            section.span(),
            "`feed.alive_timeout` must be at least 100ms",
        );
    }
    let r = f.recovery.get_ref();
    if let Err(e) = check_url(r.url.get_ref()) {
        return c.err(r.url.span(), format!("`feed.recovery.url`: {e}"));
    }
    if r.min_interval < Duration::from_millis(100) {
        return c.err(
            f.recovery.span(),
            "`feed.recovery.min_interval` must be at least 100ms",
        );
    }
    if r.timeout < r.min_interval {
        return c.err(
            f.recovery.span(),
            "`feed.recovery.timeout` must be at least `min_interval` (a request given up could not be sent again sooner)",
        );
    }
    if r.request_timeout.is_zero() {
        return c.err(
            f.recovery.span(),
            "`feed.recovery.request_timeout` must not be 0",
        );
    }
    let s = f.state.get_ref();
    let table = c.ident(&s.table, "feed.state.table")?;
    if let Err(e) = s.postgres.options() {
        return c.err(f.state.span(), format!("`feed.state.postgres`: {e}"));
    }
    Ok(Some(FeedPlan {
        name: f.name.get_ref().clone(),
        producers,
        alive_timeout: f.alive_timeout,
        recovery_url: r.url.get_ref().clone(),
        min_interval: r.min_interval,
        recovery_timeout: r.timeout,
        request_timeout: r.request_timeout,
        postgres: s.postgres.clone(),
        table,
        messages: check_messages(c, &f.messages)?,
    }))
}

fn check_messages(c: &Checker<'_>, m: &MessagesSection) -> Result<Messages, ConfigError> {
    let pointer = |v: &Spanned<String>, field: &str| -> Result<String, ConfigError> {
        if v.get_ref().starts_with('/') {
            Ok(v.get_ref().clone())
        } else {
            c.err(
                v.span(),
                format!(
                    "`feed.messages.{field}` must be a JSON pointer such as \"/{}\"",
                    v.get_ref()
                ),
            )
        }
    };
    Ok(Messages {
        type_field: pointer(&m.type_field, "type_field")?,
        alive: m.alive.clone(),
        snapshot_complete: m.snapshot_complete.clone(),
        producer: pointer(&m.producer, "producer")?,
        timestamp: pointer(&m.timestamp, "timestamp")?,
        subscribed: pointer(&m.subscribed, "subscribed")?,
        request_id: pointer(&m.request_id, "request_id")?,
    })
}

/// Checks a recovery URL template: absolute `http` or `https` once `{producer}` is filled in.
pub fn check_url(template: &str) -> Result<(), String> {
    let url =
        reqwest::Url::parse(&template.replace("{producer}", "1")).map_err(|e| e.to_string())?;
    match url.scheme() {
        "http" | "https" => Ok(()),
        other => Err(format!("scheme `{other}` is not http or https")),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn recovery_urls_are_http() {
        assert!(super::check_url("http://127.0.0.1:8088/v1/{producer}/recovery").is_ok());
        assert!(
            super::check_url("ftp://h/{producer}")
                .unwrap_err()
                .contains("ftp")
        );
        assert!(super::check_url("/v1/{producer}").is_err());
    }
}
