//! TOML configuration of the Redis sinks and of how to reach Redis; each checks itself once
//! into the typed settings the rest of the crate trusts.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use riverbed_core::DatabaseUrl;
use riverbed_core::tls::TlsConfig;
use serde::Deserialize;

use crate::error::{Error, Result};

/// How to reach Redis.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://[:password@]host:6379[/db]`, or `rediss://` for TLS (the server's certificate
    /// verified against the system roots, or `tls.ca_file`). The password never appears in
    /// logs.
    pub url: DatabaseUrl,
    /// Certificate files for a `rediss://` URL: `ca_file` (trusted instead of the system
    /// roots), and `cert_file` / `key_file` for servers that ask for a client certificate.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// A command without an answer after this long fails transiently.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub response_timeout: Duration,
    /// A connection attempt fails after this long.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Reconnection attempts per command before it fails transiently (the pipeline's retry
    /// policy takes over from there).
    #[serde(default = "default_reconnect_retries")]
    pub reconnect_retries: usize,
}

fn default_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_reconnect_retries() -> usize {
    2
}

impl RedisConfig {
    /// A config for `url` with the defaults.
    pub fn new(url: &str) -> Self {
        RedisConfig {
            url: DatabaseUrl::new(url),
            tls: None,
            response_timeout: default_timeout(),
            connect_timeout: default_timeout(),
            reconnect_retries: default_reconnect_retries(),
        }
    }

    /// Connects (the manager reconnects by itself after a connection loss).
    pub async fn connect(&self) -> Result<ConnectionManager> {
        let client = self.client()?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(self.response_timeout))
            .set_connection_timeout(Some(self.connect_timeout))
            .set_number_of_retries(self.reconnect_retries)
            .set_max_delay(Duration::from_millis(500));
        Ok(ConnectionManager::new_with_config(client, config).await?)
    }

    /// Checks the URL and the TLS files without connecting.
    pub fn check(&self) -> Result<()> {
        self.client().map(drop)
    }

    /// The client for the URL, with the TLS files when there are any.
    fn client(&self) -> Result<redis::Client> {
        let url = self.url.expose();
        let bad = |e: String| Error::Config(format!("url {}: {e}", self.url));
        let tls = url.starts_with("rediss://");
        if tls && url.ends_with("#insecure") {
            return Err(bad(
                "`#insecure` turns certificate verification off; name the \
                            server's CA in `tls.ca_file` instead"
                    .into(),
            ));
        }
        let Some(files) = &self.tls else {
            return redis::Client::open(url).map_err(|e| bad(e.to_string()));
        };
        if !tls {
            return Err(bad("`tls` needs a rediss:// url".into()));
        }
        let files = files.read().map_err(|e| Error::Config(e.to_string()))?;
        let certificates = redis::TlsCertificates {
            client_tls: files.client.map(|c| redis::ClientTlsConfig {
                client_cert: c.cert,
                client_key: c.key,
            }),
            root_cert: files.ca,
        };
        redis::Client::build_with_tls(url, certificates).map_err(|e| bad(e.to_string()))
    }
}

/// Per-message dedup of counter increments.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DedupConfig {
    /// Record each counted message id and skip ids seen before (on by default: without it a
    /// redelivered message is counted twice).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Where the message id comes from: `$message_id` or a JSON pointer.
    #[serde(default = "default_id")]
    pub id: String,
    /// How long a message id is remembered: longer than any redelivery can take (the
    /// longest outage, crash loop included, or retry delay). Each marker costs about 125 bytes
    /// of Redis memory for this long: see the `hash_incr` module docs before changing it.
    #[serde(default = "default_dedup_ttl", with = "humantime_serde")]
    pub ttl: Duration,
    /// Prefix of the marker keys (`<prefix><message id>`). Default: `riverbed:seen:` and a
    /// short hash of the sink's `key`, `field` and `amount`, so two counters over the same
    /// messages never share markers (and instances of the same sink do). Versions before
    /// this one used `riverbed:seen:` alone: set it to keep their markers across an upgrade
    /// (see the `hash_incr` module docs).
    #[serde(default)]
    pub prefix: Option<String>,
}

fn yes() -> bool {
    true
}
fn default_id() -> String {
    "$message_id".into()
}
fn default_dedup_ttl() -> Duration {
    Duration::from_secs(24 * 3600)
}

impl Default for DedupConfig {
    fn default() -> Self {
        DedupConfig {
            enabled: true,
            id: default_id(),
            ttl: default_dedup_ttl(),
            prefix: None,
        }
    }
}

/// Number kind of a counter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Amount {
    /// `HINCRBY`: exact integers (use minor units, such as cents, for money).
    Integer,
    /// `HINCRBYFLOAT`: decimals, with floating point rounding.
    #[default]
    Float,
}

/// The `hash_incr` sink: `HINCRBY`/`HINCRBYFLOAT key field amount` per message.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HashIncrConfig {
    /// How to reach Redis.
    pub redis: RedisConfig,
    /// The hash key, a template such as `totals` or `provider:{/provider}`.
    pub key: String,
    /// The hash field: a JSON pointer, `$key` or `$message_id`.
    pub field: String,
    /// JSON pointer of the amount to add (a number or a numeric string).
    pub amount: String,
    /// `integer` or `float` (default).
    #[serde(default)]
    pub kind: Amount,
    /// Per-message dedup (on by default).
    #[serde(default)]
    pub dedup: DedupConfig,
}

/// How deletes are recognised by the `latest` sink.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteConfig {
    /// JSON pointer of the operation field.
    #[serde(default = "default_op")]
    pub field: String,
    /// The value that means "delete".
    #[serde(default = "default_delete")]
    pub value: String,
}

fn default_op() -> String {
    "/op".into()
}
fn default_delete() -> String {
    "delete".into()
}

/// The `latest` sink: the newest state per key, by version.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatestConfig {
    /// How to reach Redis.
    pub redis: RedisConfig,
    /// The key template, such as `account:{/id}`: one hash `{version, value, deleted}` each.
    pub key: String,
    /// JSON pointer of the integer version; only a greater version replaces the state.
    pub version: String,
    /// JSON pointer of the stored value (default: the whole payload).
    #[serde(default)]
    pub value: Option<String>,
    /// Deletes keep a tombstone (version and `deleted = 1`) that older updates cannot undo.
    #[serde(default)]
    pub delete: Option<DeleteConfig>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_parse_with_defaults_hide_passwords_and_refuse_unknown_fields() {
        let c: HashIncrConfig = toml::from_str(
            r#"
            key = "aggregator"
            field = "/provider"
            amount = "/amount"
            redis = { url = "redis://:hunter2@127.0.0.1:6379/0", response_timeout = "500ms" }
            dedup = { ttl = "2h" }
            "#,
        )
        .unwrap();
        assert!(c.dedup.enabled);
        assert_eq!(c.dedup.ttl, Duration::from_secs(7200));
        assert_eq!(c.redis.response_timeout, Duration::from_millis(500));
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(
            toml::from_str::<LatestConfig>(
                "key = \"a\"\nversion = \"/v\"\nvalu = \"/x\"\nredis = { url = \"redis://x\" }"
            )
            .is_err()
        );
    }
}
