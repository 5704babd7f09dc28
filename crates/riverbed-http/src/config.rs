//! What users write: the raw, deserialisable configuration of the HTTP sink.
//!
//! Nothing here is trusted yet: [`crate::HttpSink::new`] checks it once (through
//! `settings`) and reports the faulty field.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;

/// How messages become request bodies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BodyFormat {
    /// One request per message, the payload as it came (default).
    #[default]
    Message,
    /// One request per batch: a JSON array of the payloads (each must be JSON).
    JsonArray,
    /// One request per batch: one payload per line (newline-delimited JSON).
    Ndjson,
}

/// The circuit breaker of the endpoint (see [`riverbed_core::breaker::BreakerPolicy`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// Opens when more than this share of the calls in the window failed (5xx, 429, 408,
    /// timeouts, refused connections; a 400 is the message's fault, not the endpoint's).
    #[serde(default = "default_ratio")]
    pub failure_ratio: f64,
    /// How many recent calls the ratio is computed over.
    #[serde(default = "default_window")]
    pub window: u32,
    /// Calls needed in the window before it may open.
    #[serde(default = "default_minimum_calls")]
    pub minimum_calls: u32,
    /// How long it stays open before probes are let through.
    #[serde(default = "default_open_for", with = "humantime_serde")]
    pub open_for: Duration,
    /// Probes let through while half-open; all must succeed to close it.
    #[serde(default = "default_probes")]
    pub half_open_probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_ratio: default_ratio(),
            window: default_window(),
            minimum_calls: default_minimum_calls(),
            open_for: default_open_for(),
            half_open_probes: default_probes(),
        }
    }
}

/// Header values that may hold secrets (`Authorization`): never shown by `Debug`.
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct SecretHeaders(pub BTreeMap<String, String>);

impl fmt::Debug for SecretHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.keys().map(|k| (k, "***")))
            .finish()
    }
}

/// The HTTP sink.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSinkConfig {
    /// The URL, with `{key}` and `{subject}` placeholders allowed in its path and query
    /// (`https://api.example.com/orders/{key}`). Credentials in it are never logged.
    pub url: String,
    /// The method (default `POST`): `POST`, `PUT`, `PATCH` or `DELETE`.
    #[serde(default = "default_method")]
    pub method: String,
    /// Take the method from each message instead: a JSON pointer (`/http_method`) or
    /// `$header.NAME`; a value that is not one of the methods above dead-letters the message.
    #[serde(default)]
    pub method_from: Option<String>,
    /// Fixed headers (`Authorization = "Bearer ${API_TOKEN}"`); their values are never logged.
    #[serde(default)]
    pub headers: SecretHeaders,
    /// Headers taken from each message: a JSON pointer (`/tenant`), `$key`, `$message_id`,
    /// `$subject` or `$header.NAME`. A message without the field gets no such header; one
    /// whose field is not text, an integer or a boolean is dead-lettered.
    #[serde(default)]
    pub header_fields: BTreeMap<String, String>,
    /// `message` (one request per message, default), `json_array` or `ndjson` (one request
    /// per batch).
    #[serde(default)]
    pub body: BodyFormat,
    /// The `Content-Type` (default `application/json`, `application/x-ndjson` for ndjson).
    #[serde(default)]
    pub content_type: Option<String>,
    /// Send `Idempotency-Key` from the message id (a batch: a digest of its ids), so a retried
    /// call is safe for services that honour it (default true).
    #[serde(default = "default_true")]
    pub idempotency_key: bool,
    /// How long one request may take, response body included.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// How long connecting may take.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Retries of one request within a write, on 5xx, 408, 429 and timeouts (then the
    /// message's attempt counts as failed and the pipeline's `[retry]` takes over).
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Delay before the first of those retries; doubles, with jitter.
    #[serde(default = "default_backoff", with = "humantime_serde")]
    pub retry_backoff: Duration,
    /// Upper bound of that delay.
    #[serde(default = "default_max_backoff", with = "humantime_serde")]
    pub retry_max_backoff: Duration,
    /// A `Retry-After` (429, 503) is honoured up to this long.
    #[serde(default = "default_max_retry_after", with = "humantime_serde")]
    pub max_retry_after: Duration,
    /// Requests in flight at once within one write (messages of one key never overlap).
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// The endpoint's circuit breaker.
    #[serde(default)]
    pub breaker: BreakerConfig,
}

fn default_method() -> String {
    "POST".into()
}
fn default_true() -> bool {
    true
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_retries() -> u32 {
    3
}
fn default_backoff() -> Duration {
    Duration::from_millis(200)
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(5)
}
fn default_max_retry_after() -> Duration {
    Duration::from_secs(60)
}
fn default_concurrency() -> usize {
    8
}
fn default_ratio() -> f64 {
    0.5
}
fn default_window() -> u32 {
    20
}
fn default_minimum_calls() -> u32 {
    10
}
fn default_open_for() -> Duration {
    Duration::from_secs(10)
}
fn default_probes() -> u32 {
    3
}

impl HttpSinkConfig {
    /// A configuration for `url` with every default.
    pub fn new(url: impl Into<String>) -> Self {
        HttpSinkConfig {
            url: url.into(),
            method: default_method(),
            method_from: None,
            headers: SecretHeaders::default(),
            header_fields: BTreeMap::new(),
            body: BodyFormat::default(),
            content_type: None,
            idempotency_key: true,
            timeout: default_timeout(),
            connect_timeout: default_connect_timeout(),
            retries: default_retries(),
            retry_backoff: default_backoff(),
            retry_max_backoff: default_max_backoff(),
            max_retry_after: default_max_retry_after(),
            concurrency: default_concurrency(),
            breaker: BreakerConfig::default(),
        }
    }
}
