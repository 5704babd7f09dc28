//! The configuration file as written: every section, field and default users can set.

use std::path::PathBuf;
use std::time::Duration;

use riverbed_embedded::{DataKind, Durability};
use serde::Deserialize;
use toml::Spanned;

pub use super::processors::{ProcessorEntry, ProcessorKind};

/// A whole pipeline file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Partitions, in-flight limit, key and shutdown.
    #[serde(default)]
    pub pipeline: PipelineSection,
    /// How transient failures are retried.
    #[serde(default)]
    pub retry: RetrySection,
    /// Where messages come from.
    pub source: Spanned<SourceKind>,
    /// Steps run in each partition, in order.
    #[serde(default)]
    pub processors: Vec<ProcessorEntry>,
    /// Where messages go; each reads one stream (`main` by default).
    #[serde(default)]
    pub sinks: Vec<SinkEntry>,
    /// Where messages that cannot be processed go (default: the source's own destination).
    pub dead_letter: Option<Spanned<DeadLetterKind>>,
    /// Tasks that run beside the pipeline and stop with it (window counters, reconciliation).
    #[serde(default)]
    pub tasks: Vec<TaskEntry>,
    /// The admin HTTP server (absent: none).
    pub admin: Option<Spanned<super::admin::AdminSection>>,
    /// How several instances share the work (absent: each instance consumes on its own).
    pub cluster: Option<Spanned<super::cluster::ClusterSection>>,
    /// Producer tracking for a sports-style feed (alives, recovery, `snapshot_complete`).
    pub feed: Option<Spanned<super::feed::FeedSection>>,
    /// A RabbitMQ queue taking reconfiguration commands (absent: none; see `riverbed run`).
    pub control: Option<Spanned<riverbed_amqp::AmqpControlConfig>>,
}

/// One `[[tasks]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskEntry {
    /// The task's name (in logs and metrics).
    pub name: String,
    /// What it does.
    pub kind: TaskKind,
}

/// Task kinds.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// Totals from a PostgreSQL query written to Redis at every aligned boundary (and once at
    /// start, before consuming: startup reconciliation).
    WindowCounter(super::tasks::WindowCounterSection),
    /// Totals from a PostgreSQL query written to Redis once, before consuming.
    Reconcile(super::tasks::ReconcileSection),
    /// The pipeline's own figures (throughput, batch write times per sink and partition)
    /// published to RabbitMQ every period, with confirms.
    PipelineMetrics(super::pipeline_metrics::PipelineMetricsSection),
}

/// `[pipeline]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSection {
    /// Partitions processing in parallel; messages of one key always share a partition
    /// (default: one per core, at least two).
    #[serde(default = "default_partitions")]
    pub partitions: Spanned<usize>,
    /// Most deliveries unsettled at once (bounds memory; backpressure reaches the source).
    #[serde(default = "default_in_flight")]
    pub max_in_flight: Spanned<usize>,
    /// Partition key: a JSON pointer ("/sensor_id"), "header:NAME", "subject", "message_id" or
    /// "source" (the key the source set). Default: "source".
    #[serde(default)]
    pub key: Option<Spanned<String>>,
    /// How long a stop may take to drain before unsettled messages are left to redelivery.
    #[serde(default = "default_grace", with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// A SQL sink with `offsets` set: a stream source (`queue_type = "stream"`, or a NATS
    /// source, whose positions are stream sequences) resumes right
    /// after the positions that sink committed with its rows. Every other sink storing offsets
    /// counts too: the stream resumes after the lowest position any of them stored. Sinks that
    /// store none (Redis, RabbitMQ, stdout...) are not skipped either: a stored position never
    /// passes a message some sink has not committed (or whose dead letter is not stored).
    pub resume_from: Option<Spanned<String>>,
    /// The dead-letter storm guard: when more than `max_share` of the last `window` settled
    /// messages were dead-lettered (a bad deploy, a schema change), stop consuming instead of
    /// emptying the source into the dead-letter destination. On by default.
    #[serde(default)]
    pub dead_letter_storm: Option<Spanned<StormSection>>,
}

/// `[pipeline.dead_letter_storm]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StormSection {
    /// Turn the guard off (`false`) for pipelines whose point is to dead-letter most input.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// The share of dead letters (between 0 and 1) that, once exceeded, stops the pipeline.
    #[serde(default = "default_storm_share")]
    pub max_share: Spanned<f64>,
    /// How many of the most recent settled messages are looked at.
    #[serde(default = "default_storm_window")]
    pub window: Spanned<u32>,
    /// Settled messages needed before the guard may trip.
    #[serde(default = "default_storm_sample")]
    pub min_sample: Spanned<u32>,
}

fn default_storm_share() -> Spanned<f64> {
    Spanned::new(0..0, riverbed_core::StormGuard::default().max_share)
}

fn default_storm_window() -> Spanned<u32> {
    Spanned::new(0..0, riverbed_core::StormGuard::default().window.get())
}

fn default_storm_sample() -> Spanned<u32> {
    Spanned::new(0..0, riverbed_core::StormGuard::default().min_sample.get())
}

impl Default for PipelineSection {
    fn default() -> Self {
        PipelineSection {
            partitions: default_partitions(),
            max_in_flight: default_in_flight(),
            key: None,
            shutdown_grace: default_grace(),
            resume_from: None,
            dead_letter_storm: None,
        }
    }
}

fn default_partitions() -> Spanned<usize> {
    Spanned::new(0..0, riverbed_core::default_partitions().get())
}

fn default_in_flight() -> Spanned<usize> {
    Spanned::new(0..0, 4096)
}

fn default_grace() -> Duration {
    Duration::from_secs(30)
}

/// `[retry]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySection {
    /// Attempts in all, the first included; then the message is dead-lettered.
    #[serde(default = "default_attempts")]
    pub max_attempts: Spanned<u32>,
    /// Delay before the second attempt; doubles each time, with jitter.
    #[serde(default = "default_initial_backoff", with = "humantime_serde")]
    pub initial_backoff: Duration,
    /// Upper bound of a delay.
    #[serde(default = "default_max_backoff", with = "humantime_serde")]
    pub max_backoff: Duration,
    /// `in_process` (the partition waits: per-key order kept) or `broker` (the broker holds the
    /// message back: no slot held, but later messages of a key may overtake it).
    #[serde(default)]
    pub mode: riverbed_core::RetryMode,
    /// Deliveries of one message without it being settled (crashes, reconnects) before it is
    /// dead-lettered unprocessed with reason `delivery_limit`: a message that crashes the
    /// process is not redelivered forever (default 20).
    #[serde(default = "default_deliveries")]
    pub max_deliveries: Spanned<u32>,
}

impl Default for RetrySection {
    fn default() -> Self {
        RetrySection {
            max_attempts: default_attempts(),
            initial_backoff: default_initial_backoff(),
            max_backoff: default_max_backoff(),
            mode: Default::default(),
            max_deliveries: default_deliveries(),
        }
    }
}

fn default_deliveries() -> Spanned<u32> {
    Spanned::new(0..0, riverbed_core::DEFAULT_MAX_DELIVERIES.get())
}

fn default_attempts() -> Spanned<u32> {
    Spanned::new(0..0, 5)
}

fn default_initial_backoff() -> Duration {
    Duration::from_millis(100)
}

fn default_max_backoff() -> Duration {
    Duration::from_secs(30)
}

/// `[source]`, chosen by `kind`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// The embedded durable log.
    Embedded(EmbeddedSource),
    /// Synthetic data (not durable): demos and benchmarks.
    Generate(GenerateSection),
    /// A RabbitMQ queue or stream.
    Amqp(Box<riverbed_amqp::AmqpSourceConfig>),
    /// A NATS JetStream stream, through a durable pull consumer.
    Nats(Box<riverbed_nats::NatsSourceConfig>),
    /// A transactional outbox table in PostgreSQL (the relay): rows in per-entity order,
    /// marked sent once every sink settled them.
    PostgresOutbox(Box<riverbed_sql::PostgresOutboxConfig>),
}

/// `kind = "embedded"`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddedSource {
    /// The log's SQLite file.
    pub path: PathBuf,
    /// The topic to consume.
    pub topic: String,
    /// The consumer name under which the position is stored.
    #[serde(default = "default_consumer")]
    pub consumer: String,
    /// Keep waiting for new messages at the end of the topic (true), or stop there (false).
    #[serde(default = "default_true")]
    pub follow: bool,
    /// `full` (survives power loss) or `normal` (survives a process crash).
    #[serde(default)]
    pub durability: Durability,
}

fn default_consumer() -> String {
    "riverbed".into()
}

fn default_true() -> bool {
    true
}

/// `kind = "generate"`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateSection {
    /// `sensors`, `orders` or `transactions`.
    #[serde(default)]
    pub data: DataKind,
    /// How many messages; forever if absent.
    pub count: Option<u64>,
    /// Skip this many records of the seeded sequence first: with the same seed, a run with
    /// `skip = 500` continues exactly where a run with `count = 500` stopped (same ids and
    /// values, none repeated). Cannot be combined with `rate`.
    #[serde(default)]
    pub skip: u64,
    /// At most this many per second; unlimited if absent.
    pub rate: Option<u64>,
    /// Seed of the generator: the same seed yields the same data.
    #[serde(default)]
    pub seed: u64,
    /// Distinct keys (sensors, customers, providers).
    #[serde(default = "default_keys")]
    pub keys: u32,
    /// Every n-th message is malformed on purpose (to exercise dead letters).
    pub malformed_every: Option<u64>,
}

fn default_keys() -> u32 {
    20
}

/// One `[[sinks]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkEntry {
    /// The sink's name (unique).
    pub name: Spanned<String>,
    /// The stream it reads (default `main`).
    pub input: Option<Spanned<String>>,
    /// When batches are written (default: derived from max_in_flight and partitions).
    pub batch: Option<BatchSection>,
    /// What the sink is.
    pub kind: SinkKind,
}

/// `[sinks.batch]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchSection {
    /// Write as soon as this many messages wait.
    pub max_size: Option<Spanned<usize>>,
    /// Write at the latest this long after a batch's first message (default 0: as soon as the
    /// sink is idle; batches grow while a write is under way).
    #[serde(default, with = "humantime_serde")]
    pub max_wait: Option<Duration>,
    /// Write only the last message of each key in a batch: with `max_wait` as the period, a
    /// stream of per-key snapshots becomes the latest snapshot of each key that changed in
    /// the period. The deliveries of the messages left out are settled with the one written,
    /// only after it was committed.
    #[serde(default)]
    pub coalesce: bool,
}

/// The sink kinds.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkKind {
    /// A SQLite table.
    Sqlite(Box<SqliteSection>),
    /// JSON lines on standard output.
    Stdout(LinesSection),
    /// JSON lines appended to a file (synced after each batch).
    File(FileSection),
    /// Discards everything (benchmarks).
    Noop(NoopSection),
    /// A PostgreSQL table: append, versioned upsert with tombstones, or inbox.
    Postgres(Box<riverbed_sql::PostgresSinkConfig>),
    /// Redis `HINCRBY`/`HINCRBYFLOAT` counters, deduplicated per message id.
    RedisHashIncr(Box<riverbed_redis::HashIncrConfig>),
    /// The newest state per key in Redis, by version.
    RedisLatest(Box<riverbed_redis::LatestConfig>),
    /// Publish to RabbitMQ with confirms; unroutable messages fail loudly.
    Amqp(Box<riverbed_amqp::AmqpSinkConfig>),
    /// Publish to NATS JetStream, awaiting each publish ack; `Nats-Msg-Id` from the message id.
    Nats(Box<riverbed_nats::NatsSinkConfig>),
    /// HTTP requests (per message or per batch) with retries, `Idempotency-Key` and a circuit
    /// breaker that pauses the pipeline while the service is down.
    Http(Box<riverbed_http::HttpSinkConfig>),
}

/// `kind = "sqlite"`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqliteSection {
    /// The database file.
    pub path: PathBuf,
    /// The table (optionally `schema.table`).
    pub table: Spanned<String>,
    /// `insert` (a row whose key exists is skipped) or `upsert` (replaced, if newer by `version`).
    #[serde(default)]
    pub mode: ModeName,
    /// Key columns (the conflict target).
    #[serde(default)]
    pub key: Vec<Spanned<String>>,
    /// Version column for upserts: only a newer version replaces a row.
    pub version: Option<Spanned<String>>,
    /// Create the table if it does not exist.
    #[serde(default = "default_true")]
    pub create: bool,
    /// Store source positions under this consumer name, in the same transaction as the rows.
    /// Needs `key`: a restart re-reads what was committed after the stored position, which
    /// only a keyed table absorbs.
    pub offsets: Option<Spanned<String>>,
    /// The columns, in order.
    pub columns: Vec<ColumnSection>,
    /// Upsert: keep deletes as tombstone rows (key, version, a boolean column; every other
    /// column NULL), so an older update arriving late cannot bring a deleted entity back.
    /// `{ column = "deleted", field = "/op", value = "delete" }` (these defaults), as for
    /// PostgreSQL.
    pub tombstone: Option<Spanned<riverbed_sql::TombstoneConfig>>,
}

/// Write modes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModeName {
    /// Insert if absent.
    #[default]
    Insert,
    /// Insert or replace (versioned if `version` is set).
    Upsert,
}

/// One `[[sinks.columns]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnSection {
    /// Column name.
    pub name: Spanned<String>,
    /// `text`, `integer`, `real`, `numeric`, `boolean`, `json`, `bytes` or `timestamp`.
    #[serde(rename = "type")]
    pub ty: riverbed_sql::ColumnType,
    /// A JSON pointer ("/reading_id") or $key, $payload, $position, $message_id, $subject,
    /// $received_at, $header.NAME.
    pub from: Spanned<String>,
    /// A missing value dead-letters the message instead of writing NULL.
    #[serde(default)]
    pub required: bool,
}

/// `kind = "stdout"`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinesSection {
    /// Wrap each payload with its key, headers, position and message id.
    #[serde(default)]
    pub envelope: bool,
}

/// `kind = "file"`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSection {
    /// The file appended to.
    pub path: PathBuf,
    /// Wrap each payload with its key, headers, position and message id.
    #[serde(default)]
    pub envelope: bool,
}

/// `kind = "noop"`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoopSection {}

/// `[dead_letter]`, chosen by `kind`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadLetterKind {
    /// The dead-letter table of an embedded log file.
    Embedded(EmbeddedDeadLetters),
    /// JSON lines appended to a file (synced).
    File(FileSection),
    /// Only a structured error log line per letter (nothing stored).
    Log(NoopSection),
    /// A durable RabbitMQ queue, with the reasons as headers.
    Amqp(Box<riverbed_amqp::AmqpDeadLetterConfig>),
    /// A NATS JetStream subject, with the reasons as headers.
    Nats(Box<riverbed_nats::NatsDeadLetterConfig>),
}

/// `kind = "embedded"` dead letters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddedDeadLetters {
    /// The log's SQLite file.
    pub path: PathBuf,
    /// The topic the letters are filed under (redrive puts them back there).
    pub topic: String,
}
