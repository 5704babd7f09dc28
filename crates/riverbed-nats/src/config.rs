//! What users write: the raw, deserialisable configuration of the source, sink and dead letters.
//!
//! Nothing here is trusted yet: the constructors (`NatsSource::new`...) check these structs
//! once, through [`crate::settings`], and report the faulty field.

use std::time::Duration;

use serde::Deserialize;

use crate::server::ServerUrl;

fn default_servers() -> Vec<ServerUrl> {
    vec![
        "nats://127.0.0.1:4222"
            .parse()
            .expect("the default url parses"),
    ]
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_ack_wait() -> Duration {
    Duration::from_secs(30)
}
fn default_batch() -> usize {
    256
}
fn default_expires() -> Duration {
    Duration::from_secs(30)
}
fn default_heartbeat() -> Duration {
    Duration::from_secs(5)
}
fn default_reconnect_initial() -> Duration {
    Duration::from_millis(100)
}
fn default_reconnect_max() -> Duration {
    Duration::from_secs(10)
}
fn default_publish_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_subject() -> String {
    "{subject}".into()
}

/// Where a new durable consumer starts: `"all"` (the stream's history, the default), `"new"`
/// (only what is published from now on), a stream sequence (integer), or an RFC 3339 time
/// such as `"2024-05-01T00:00:00Z"`. An existing durable resumes where it left off.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum DeliverConfig {
    /// Start at this stream sequence.
    Sequence(u64),
    /// `all`, `new` or a time.
    Named(String),
}

/// The JetStream source: a durable pull consumer on a stream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSourceConfig {
    /// Server URLs (`nats://user:password@host:4222`); the client reconnects to any of them.
    /// Credentials are never logged.
    #[serde(default = "default_servers")]
    pub servers: Vec<ServerUrl>,
    /// Name shown for the connection in the server's monitoring.
    #[serde(default)]
    pub connection_name: Option<String>,
    /// How long one connection attempt (and one JetStream API request) may take.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// The stream to consume.
    pub stream: String,
    /// Subjects of the stream, if Riverbed should create it when it does not exist (file
    /// storage, limits retention). Empty: the stream must exist.
    #[serde(default)]
    pub stream_subjects: Vec<String>,
    /// The durable consumer's name: created if missing, bound to if it exists.
    pub durable: String,
    /// Only messages whose subject matches this filter (one filter: several need
    /// nats-server 2.10).
    #[serde(default)]
    pub filter_subject: Option<String>,
    /// Where a newly created durable starts (default `all`).
    #[serde(default)]
    pub deliver: Option<DeliverConfig>,
    /// How long the server waits for an acknowledgement before redelivering. Deliveries still
    /// unsettled after half of it get an in-progress ack (`+WPI`) that restarts the timer.
    #[serde(default = "default_ack_wait", with = "humantime_serde")]
    pub ack_wait: Duration,
    /// Deliveries the server hands out unacknowledged (default: the pipeline's
    /// `max_in_flight` in the daemon, else 4096), so backpressure reaches the server.
    #[serde(default)]
    pub max_ack_pending: Option<u32>,
    /// The server stops redelivering after this many deliveries (default: unlimited; the
    /// pipeline's `max_attempts` dead-letters before). Must exceed `retry.max_attempts`.
    #[serde(default)]
    pub max_deliver: Option<u32>,
    /// Messages asked for in one pull request.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// How long one pull request lives on the server before it is renewed.
    #[serde(default = "default_expires", with = "humantime_serde")]
    pub expires: Duration,
    /// The server sends an idle heartbeat this often while it has nothing to deliver; two
    /// missed heartbeats renew the pull (and the consumer binding). At most half of `expires`.
    #[serde(default = "default_heartbeat", with = "humantime_serde")]
    pub idle_heartbeat: Duration,
    /// First delay between attempts to bind the consumer again (doubles, with jitter).
    #[serde(default = "default_reconnect_initial", with = "humantime_serde")]
    pub reconnect_initial: Duration,
    /// Longest delay between those attempts.
    #[serde(default = "default_reconnect_max", with = "humantime_serde")]
    pub reconnect_max: Duration,
    /// Where dead letters are published (default `riverbed.dlq.<stream>.<durable>`).
    #[serde(default)]
    pub dead_letter_subject: Option<String>,
    /// The stream that keeps dead letters (default `<stream>_dlq`), created if missing with the
    /// dead-letter subject (with both defaults: `riverbed.dlq.<stream>.>`, so every durable of
    /// the stream shares it), and given the subject when it does not capture it yet. Empty:
    /// the subject must already be captured by a stream.
    #[serde(default)]
    pub dead_letter_stream: Option<String>,
    /// How long publishing one dead letter or broker retry may wait for its ack.
    #[serde(default = "default_publish_timeout", with = "humantime_serde")]
    pub publish_timeout: Duration,
}

/// The JetStream publishing sink.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSinkConfig {
    /// Server URLs (`nats://user:password@host:4222`); the client reconnects to any of them.
    /// Credentials are never logged.
    #[serde(default = "default_servers")]
    pub servers: Vec<ServerUrl>,
    /// Name shown for the connection in the server's monitoring.
    #[serde(default)]
    pub connection_name: Option<String>,
    /// How long one connection attempt (and one JetStream API request) may take.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// The subject: fixed text with `{key}` and `{subject}` (the message's original subject)
    /// placeholders, such as `orders.{key}`. Default `{subject}`.
    #[serde(default = "default_subject")]
    pub subject: String,
    /// How long a batch may wait for its publish acks; what is not acknowledged by then
    /// fails as transient (retried; `Nats-Msg-Id` lets the server drop the duplicate).
    #[serde(default = "default_publish_timeout", with = "humantime_serde")]
    pub publish_timeout: Duration,
}

/// Dead letters published to a JetStream subject, with their reasons as headers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsDeadLetterConfig {
    /// Server URLs (`nats://user:password@host:4222`); the client reconnects to any of them.
    /// Credentials are never logged.
    #[serde(default = "default_servers")]
    pub servers: Vec<ServerUrl>,
    /// Name shown for the connection in the server's monitoring.
    #[serde(default)]
    pub connection_name: Option<String>,
    /// How long one connection attempt (and one JetStream API request) may take.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// The subject letters are published to.
    pub subject: String,
    /// A stream created with that subject if it does not exist; absent: one must capture it.
    #[serde(default)]
    pub stream: Option<String>,
    /// How long one letter may wait for its publish ack.
    #[serde(default = "default_publish_timeout", with = "humantime_serde")]
    pub publish_timeout: Duration,
}
