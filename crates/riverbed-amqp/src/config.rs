//! What users write: the raw, deserialisable configuration of the source, sink and dead letters.
//!
//! Nothing here is trusted yet: the constructors (`AmqpSource::new`...) turn these structs
//! into checked settings in one place, and everything after that relies on the checks.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::url::BrokerUrl;
use riverbed_core::tls::TlsConfig;

pub(crate) fn default_urls() -> Vec<BrokerUrl> {
    vec![
        "amqp://guest:guest@127.0.0.1:5672/%2f"
            .parse()
            .expect("the default url parses"),
    ]
}
fn yes() -> bool {
    true
}
/// Matches the pipeline's default in-flight window (4096): the pipeline derives its batch sizes
/// from that window, and a smaller prefetch would leave batches waiting for their timer.
fn default_prefetch() -> u32 {
    4096
}
fn default_ack_interval() -> Duration {
    Duration::from_millis(5)
}
fn default_linger() -> Duration {
    Duration::from_millis(1)
}
pub(crate) fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}
pub(crate) fn default_confirm_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_routing_key() -> String {
    "{key}".into()
}

fn default_reconnect_initial() -> Duration {
    Duration::from_millis(100)
}
fn default_reconnect_max() -> Duration {
    Duration::from_secs(10)
}

/// The RabbitMQ queue types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueType {
    /// A classic queue.
    Classic,
    /// A replicated quorum queue (counts redeliveries in `x-delivery-count`).
    Quorum,
    /// An append-only stream read from an offset; messages stay after they are acknowledged.
    Stream,
}

/// Exchange types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExchangeType {
    /// Every bound queue gets every message.
    Fanout,
    /// Routing key equals binding key.
    Direct,
    /// Routing key matches a pattern with `*` and `#`.
    Topic,
    /// Headers match the binding's arguments (`x-match` = `all` or `any`).
    Headers,
}

/// A value of a queue, exchange or binding argument.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum ArgValue {
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A floating point number.
    Float(f64),
    /// A string.
    Str(String),
}

/// An exchange to declare.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExchangeConfig {
    /// The exchange name.
    pub name: String,
    /// Its type.
    pub kind: ExchangeType,
    /// Survives a broker restart.
    #[serde(default = "yes")]
    pub durable: bool,
    /// Deleted when its last binding goes.
    #[serde(default)]
    pub auto_delete: bool,
    /// Where messages that match no binding go instead of being returned or dropped.
    #[serde(default)]
    pub alternate_exchange: Option<String>,
    /// Other `x-` arguments.
    #[serde(default)]
    pub arguments: BTreeMap<String, ArgValue>,
}

/// A binding of the consumed queue to an exchange.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindingConfig {
    /// The exchange to bind to (declare it under `exchanges` if it may not exist).
    pub exchange: String,
    /// The binding key (ignored by fanout and headers exchanges).
    #[serde(default)]
    pub routing_key: String,
    /// Binding arguments; for a headers exchange, `x-match` and the header values to match.
    #[serde(default)]
    pub arguments: BTreeMap<String, ArgValue>,
}

/// Where a stream consumer starts: `"first"`, `"last"`, `"next"`, an offset (integer) or an
/// RFC 3339 timestamp such as `"2024-05-01T00:00:00Z"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum StreamOffsetConfig {
    /// An absolute offset.
    Offset(u64),
    /// `first`, `last`, `next` or a timestamp.
    Named(String),
}

/// Broker-side delayed retry through TTL queues that dead-letter back to the consumed queue.
///
/// Used when the pipeline's retry mode is `broker`. While a message waits in a retry queue,
/// later messages with the same key are processed: broker retry gives up per-key order for not
/// holding a prefetch slot. Pipelines that need per-key order keep the default in-process retry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryQueueConfig {
    /// Whether the source offers delayed retry (default: on for named queues, off for
    /// server-named queues and streams, which cannot have it).
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Prefix of the retry queues, one per delay tier (default `<queue>.retry`, giving
    /// `<queue>.retry.128ms`, `<queue>.retry.256ms`...).
    #[serde(default)]
    pub queue_prefix: Option<String>,
    /// Type of the retry queues: `quorum` (the default and the only one accepted) dead-letters
    /// back to the source queue at least once. `classic` is refused: its dead-lettering is at
    /// most once while the original is acknowledged once the copy is confirmed, so a message
    /// the source queue refuses at that moment (full, or a node down) would be lost.
    #[serde(default)]
    pub queue_type: Option<QueueType>,
    /// How long a retry the broker does not take (its retry queue cannot be declared, the copy
    /// is not confirmed) is held and tried again before it goes to the pipeline's dead-letter
    /// destination with reason `retry_unavailable` (default 30s). While held, the delivery
    /// stays unacknowledged and cumulative acknowledgements cannot pass it.
    #[serde(default, with = "humantime_serde::option")]
    pub hold_limit: Option<Duration>,
}

/// The RabbitMQ source: consumes a queue (classic, quorum, server-named) or a stream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpSourceConfig {
    /// Broker URLs (`amqp://user:password@host:port/vhost`), tried in turn: each reconnect
    /// moves to the next one. Credentials are never logged. Add `?heartbeat=10` to notice a
    /// dead peer sooner (default: the broker's heartbeat, 60 s).
    #[serde(default = "default_urls")]
    pub urls: Vec<BrokerUrl>,
    /// Certificate files for `amqps://` URLs: `ca_file` (trusted besides the system roots),
    /// and `cert_file` / `key_file` for a broker that asks for a client certificate. The
    /// broker's certificate is always verified.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Name shown for the connection in the broker's management tools.
    #[serde(default)]
    pub connection_name: Option<String>,
    /// How long one connection attempt may take; also bounds every other round trip to the
    /// broker (opening a channel, declaring, closing).
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// First delay between reconnection attempts (doubles, with jitter, after each failure).
    #[serde(default = "default_reconnect_initial", with = "humantime_serde")]
    pub reconnect_initial: Duration,
    /// Longest delay between reconnection attempts.
    #[serde(default = "default_reconnect_max", with = "humantime_serde")]
    pub reconnect_max: Duration,
    /// The queue to consume; empty for a server-named queue (a new name after each reconnect).
    #[serde(default)]
    pub queue: String,
    /// The queue survives a broker restart (ignored for server-named queues, never durable).
    #[serde(default = "yes")]
    pub durable: bool,
    /// Only this connection may use the queue; it is deleted when the connection closes.
    #[serde(default)]
    pub exclusive: bool,
    /// The queue is deleted when its last consumer goes.
    #[serde(default)]
    pub auto_delete: bool,
    /// Only check that the queue exists instead of declaring it.
    #[serde(default)]
    pub passive: bool,
    /// The queue type (`x-queue-type`); the broker default (classic) when absent.
    #[serde(default)]
    pub queue_type: Option<QueueType>,
    /// Only one consumer at a time receives messages (`x-single-active-consumer`).
    #[serde(default)]
    pub single_active_consumer: bool,
    /// Other queue arguments (`x-max-length`, `x-message-ttl`...).
    #[serde(default)]
    pub queue_arguments: BTreeMap<String, ArgValue>,
    /// Exchanges to declare before binding.
    #[serde(default)]
    pub exchanges: Vec<ExchangeConfig>,
    /// Bindings of the queue, re-declared after every reconnect.
    #[serde(default)]
    pub bindings: Vec<BindingConfig>,
    /// Unacknowledged deliveries the broker may push at once (1 to 65535). The default, 4096,
    /// matches the pipeline's default `max_in_flight`; keep it at least that large, or batches
    /// wait for their timer instead of filling.
    #[serde(default = "default_prefetch")]
    pub prefetch: u32,
    /// The consumer tag; empty lets the broker choose.
    #[serde(default)]
    pub consumer_tag: String,
    /// Where a stream consumer starts the first time (streams only; default `next`). Later
    /// sessions resume after the last settled offset; one that reconnects before its first
    /// delivery after starting at `next` or `last` resumes from a minute before the time it
    /// first attached (a margin for clock differences between this host and the broker), so
    /// nothing published during the outage is skipped and what came shortly before the first
    /// attach may come again.
    #[serde(default)]
    pub stream_offset: Option<StreamOffsetConfig>,
    /// Longest time a completed delivery waits before its (cumulative) acknowledgement is sent.
    #[serde(default = "default_ack_interval", with = "humantime_serde")]
    pub ack_interval: Duration,
    /// When only a few deliveries are at hand, wait this long for more before handing them to
    /// the pipeline: fewer, larger groups cost less per message. `0s` hands over at once.
    #[serde(default = "default_linger", with = "humantime_serde")]
    pub linger: Duration,
    /// Broker-side delayed retry.
    #[serde(default)]
    pub retry: RetryQueueConfig,
    /// The dead-letter queue (default `<queue>.dlq`; required for server-named queues). It is a
    /// quorum queue when the source queue is one (an existing classic one is refused by the
    /// broker: delete or rename it).
    #[serde(default)]
    pub dead_letter_queue: Option<String>,
    /// How long to wait for publisher confirms of retried messages.
    #[serde(default = "default_confirm_timeout", with = "humantime_serde")]
    pub confirm_timeout: Duration,
}

/// The RabbitMQ publishing sink.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpSinkConfig {
    /// Broker URLs (`amqp://user:password@host:port/vhost`), tried in turn: each reconnect
    /// moves to the next one. Credentials are never logged. Add `?heartbeat=10` to notice a
    /// dead peer sooner (default: the broker's heartbeat, 60 s).
    #[serde(default = "default_urls")]
    pub urls: Vec<BrokerUrl>,
    /// Certificate files for `amqps://` URLs: `ca_file` (trusted besides the system roots),
    /// and `cert_file` / `key_file` for a broker that asks for a client certificate. The
    /// broker's certificate is always verified.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Name shown for the connection in the broker's management tools.
    #[serde(default)]
    pub connection_name: Option<String>,
    /// How long one connection attempt may take; also bounds every other round trip to the
    /// broker (opening a channel, declaring, closing).
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// The exchange to publish to (empty: the default exchange, routing key = queue name).
    #[serde(default)]
    pub exchange: String,
    /// The routing key: fixed text, or a template with `{key}` (the message key) and
    /// `{subject}` (the routing key it arrived with), such as `orders.{key}`.
    #[serde(default = "default_routing_key")]
    pub routing_key: String,
    /// Exchanges to declare on every (re)connect.
    #[serde(default)]
    pub exchanges: Vec<ExchangeConfig>,
    /// Ask the broker to return unroutable messages; a returned message fails permanently
    /// instead of vanishing. Turn off only with an alternate exchange in place.
    #[serde(default = "yes")]
    pub mandatory: bool,
    /// Publish with `delivery_mode = 2` so queued messages survive a broker restart.
    #[serde(default = "yes")]
    pub persistent: bool,
    /// How long sending one batch and waiting for its publisher confirms may take; what is not
    /// confirmed by then fails as transient (retried).
    #[serde(default = "default_confirm_timeout", with = "humantime_serde")]
    pub confirm_timeout: Duration,
}

/// A dead-letter queue on RabbitMQ.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpDeadLetterConfig {
    /// Broker URLs (`amqp://user:password@host:port/vhost`), tried in turn: each reconnect
    /// moves to the next one. Credentials are never logged. Add `?heartbeat=10` to notice a
    /// dead peer sooner (default: the broker's heartbeat, 60 s).
    #[serde(default = "default_urls")]
    pub urls: Vec<BrokerUrl>,
    /// Certificate files for `amqps://` URLs: `ca_file` (trusted besides the system roots),
    /// and `cert_file` / `key_file` for a broker that asks for a client certificate. The
    /// broker's certificate is always verified.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Name shown for the connection in the broker's management tools.
    #[serde(default)]
    pub connection_name: Option<String>,
    /// How long one connection attempt may take; also bounds every other round trip to the
    /// broker (opening a channel, declaring, closing).
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// The queue letters go to (declared durable).
    pub queue: String,
    /// Its type (default classic).
    #[serde(default)]
    pub queue_type: Option<QueueType>,
    /// How long sending one group of letters and waiting for their confirms may take.
    #[serde(default = "default_confirm_timeout", with = "humantime_serde")]
    pub confirm_timeout: Duration,
}
