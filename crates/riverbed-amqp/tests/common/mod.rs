//! Helpers shared by the RabbitMQ integration tests: the broker lock, raw publishing and
//! inspection, recording sinks and waiting on conditions with a deadline.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use riverbed_amqp::AmqpSourceConfig;
use riverbed_core::{BatchOutcome, Message, Outcome, Sink};

/// The broker every test talks to.
pub const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Takes the broker lock (a file lock, so across test binaries too): normal tests share it;
/// tests that stop the broker or close every connection take it exclusively, so they never
/// disturb another test.
pub async fn broker(exclusive: bool) -> riverbed_core::testing::ServiceLock {
    riverbed_core::testing::lock_service("rabbitmq", exclusive).await
}

/// Whether the broker answers (fails instead under `RIVERBED_REQUIRE_SERVICES=1`).
/// Also sends logs to the test output (`RUST_LOG` filters them).
pub fn available() -> bool {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    riverbed_core::testing::require_service("RabbitMQ", "127.0.0.1:5672")
}

/// A name no other test or run uses.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "rb-test-{prefix}-{}-{}",
        std::process::id(),
        nanos % 1_000_000_000
    )
}

/// How long a pipeline in a test may take to reach its goal.
pub const LIMIT: Duration = Duration::from_secs(60);

/// Runs `pipeline` until `done` holds, then stops it and returns its report.
pub async fn run_until(
    pipeline: riverbed_core::Pipeline,
    what: &'static str,
    done: impl Fn() -> bool + Send + 'static,
) -> riverbed_core::Report {
    let shutdown = async move { wait_until(what, LIMIT, done).await };
    pipeline.run(shutdown).await.expect("pipeline runs")
}

/// Runs a test body, failing it if it takes longer than two minutes.
///
/// The panic comes while the body is still alive, so its guards (`DeleteOnPanic`) see a
/// panicking thread when they are dropped and clean up.
pub async fn bounded<F: Future>(body: F) -> F::Output {
    tokio::pin!(body);
    tokio::select! {
        out = &mut body => out,
        () = tokio::time::sleep(Duration::from_secs(120)) => {
            panic!("test did not finish within two minutes")
        }
    }
}

/// Polls `cond` every 10 ms until it holds; panics with `what` after `limit`.
pub async fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Like [`wait_until`] with an async condition.
pub async fn wait_until_async<F: Future<Output = bool>>(
    what: &str,
    limit: Duration,
    mut cond: impl FnMut() -> F,
) {
    let deadline = Instant::now() + limit;
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A raw client connection and confirm channel, for publishing and inspecting in tests.
pub struct Raw {
    pub connection: Connection,
    pub channel: Channel,
}

impl Raw {
    pub async fn connect() -> Raw {
        let connection = Connection::connect(URL, ConnectionProperties::default())
            .await
            .expect("test connection");
        let channel = connection.create_channel().await.unwrap();
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        Raw {
            connection,
            channel,
        }
    }

    /// Declares a durable queue with `args`.
    pub async fn declare(&self, queue: &str, args: FieldTable) {
        self.channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                args,
            )
            .await
            .unwrap();
    }

    /// Binds `queue` to `exchange` with `routing_key`.
    pub async fn bind(&self, queue: &str, exchange: &str, routing_key: &str) {
        self.channel
            .queue_bind(
                queue.into(),
                exchange.into(),
                routing_key.into(),
                Default::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
    }

    /// Publishes persistent messages with ids `m{from}`.. `m{to-1}` and payloads
    /// `{"id": i}` to `exchange`/`routing_key`, and waits for every confirm.
    pub async fn publish_range(&self, exchange: &str, routing_key: &str, from: usize, to: usize) {
        for i in from..to {
            self.publish(
                exchange,
                routing_key,
                &format!("m{i}"),
                format!(r#"{{"id":{i}}}"#),
            )
            .await;
        }
        let returned = self.channel.wait_for_confirms().await.unwrap();
        assert!(returned.is_empty(), "test messages were returned");
    }

    /// Publishes one persistent message (confirm awaited later by `wait_for_confirms`).
    pub async fn publish(&self, exchange: &str, routing_key: &str, id: &str, payload: String) {
        self.publish_with_headers(exchange, routing_key, id, payload, FieldTable::default())
            .await;
    }

    /// Publishes one persistent message with `headers` (confirm awaited later).
    pub async fn publish_with_headers(
        &self,
        exchange: &str,
        routing_key: &str,
        id: &str,
        payload: String,
        headers: FieldTable,
    ) {
        let confirm = self
            .channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                payload.as_bytes(),
                BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_message_id(id.into())
                    .with_headers(headers),
            )
            .await
            .unwrap();
        // A dropped confirm is awaited by `wait_for_confirms`.
        drop(confirm);
    }

    /// Ready messages in `queue` (unacknowledged ones are not counted).
    pub async fn ready(&self, queue: &str) -> u32 {
        let ch = self.connection.create_channel().await.unwrap();
        let q = ch
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        q.message_count()
    }

    /// Takes one message from `queue`, acknowledging it.
    pub async fn get(&self, queue: &str) -> Option<lapin::message::BasicGetMessage> {
        self.channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
    }

    /// Deletes an exchange (a missing one is fine).
    pub async fn delete_exchange(&self, exchange: &str) {
        let ch = self.connection.create_channel().await.unwrap();
        let _ = ch
            .exchange_delete(exchange.into(), Default::default())
            .await;
    }

    /// Deletes queues (missing ones are fine).
    pub async fn delete(&self, queues: &[String]) {
        for q in queues {
            let ch = self.connection.create_channel().await.unwrap();
            let _ = ch
                .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
    }
}

/// Runs `rabbitmqctl` with `args`, failing the test if it fails.
pub fn rabbitmqctl(args: &[&str]) {
    let out = std::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl runs");
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Closes every client connection of the broker (take the broker lock exclusively first).
pub async fn close_all_connections() {
    tokio::task::spawn_blocking(|| rabbitmqctl(&["close_all_connections", "test"]))
        .await
        .unwrap();
}

/// Queue names that start with `prefix`, as `rabbitmqctl` lists them.
pub fn queues_with_prefix(prefix: &str) -> Vec<String> {
    let out = std::process::Command::new("rabbitmqctl")
        .args(["list_queues", "--quiet", "--no-table-headers", "name"])
        .output()
        .expect("rabbitmqctl runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with(prefix))
        .map(str::to_owned)
        .collect()
}

/// Deletes every queue whose name starts with its prefix when a test panics, so a failed run
/// leaves nothing behind (a passing test deletes its queues itself).
pub struct DeleteOnPanic(pub String);

impl Drop for DeleteOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for q in queues_with_prefix(&self.0) {
                let _ = std::process::Command::new("rabbitmqctl")
                    .args(["delete_queue", &q])
                    .output();
            }
        }
    }
}

/// A source configuration for `queue` written the way users write it.
pub fn source_config(queue: &str, extra: &str) -> AmqpSourceConfig {
    let text = format!(
        "urls = [\"{URL}\"]\nqueue = \"{queue}\"\n\
         reconnect_initial = \"50ms\"\nreconnect_max = \"500ms\"\n{extra}"
    );
    toml::from_str(&text).expect("test config parses")
}

/// Runs `pipeline` in a task until the returned sender fires; the task returns its report.
pub fn spawn_pipeline(
    pipeline: riverbed_core::Pipeline,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<riverbed_core::Report>,
) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(async move {
        pipeline
            .run(async move {
                let _ = stopped.await;
            })
            .await
            .expect("pipeline runs")
    });
    (stop, run)
}

/// Message ids committed so far, in commit order.
pub fn committed_ids(committed: &Mutex<Vec<Seen>>) -> Vec<String> {
    committed
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.id.clone())
        .collect()
}

/// What a recording sink saw of one message.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub id: String,
    pub position: Option<u64>,
    pub attempt: u32,
    pub redelivered: bool,
    pub subject: Option<String>,
}

type Rule = dyn Fn(&Message) -> Outcome + Send + Sync;

/// A sink that records every message it commits, failing where its rule says (each message on
/// its own: tests that use failures give every message its own key), optionally slowed down so
/// a test can act while messages are in flight.
pub struct Recorder {
    pub committed: Arc<Mutex<Vec<Seen>>>,
    pub written: Arc<Mutex<Vec<Seen>>>,
    rule: Box<Rule>,
    delay: Duration,
}

impl Recorder {
    pub fn new() -> Self {
        Self::failing(|_| Outcome::Ok)
    }

    pub fn failing(rule: impl Fn(&Message) -> Outcome + Send + Sync + 'static) -> Self {
        Recorder {
            committed: Default::default(),
            written: Default::default(),
            rule: Box::new(rule),
            delay: Duration::ZERO,
        }
    }

    pub fn slowed(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Committed ids with how many times each was committed.
    pub fn counts(committed: &Mutex<Vec<Seen>>) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for s in committed.lock().unwrap().iter() {
            *m.entry(s.id.clone()).or_insert(0) += 1;
        }
        m
    }
}

fn seen(m: &Message) -> Seen {
    Seen {
        id: m.meta.message_id.clone().unwrap_or_default(),
        position: m.meta.position,
        attempt: m.meta.attempt,
        redelivered: m.meta.redelivered,
        subject: m.meta.subject.clone(),
    }
}

#[async_trait]
impl Sink for Recorder {
    async fn write(&self, batch: &[Message]) -> BatchOutcome {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let outcomes: Vec<Outcome> = batch.iter().map(|m| (self.rule)(m)).collect();
        self.written.lock().unwrap().extend(batch.iter().map(seen));
        let mut committed = self.committed.lock().unwrap();
        for (m, o) in batch.iter().zip(&outcomes) {
            if o.is_ok() {
                committed.push(seen(m));
            }
        }
        BatchOutcome::Each(outcomes)
    }
}
