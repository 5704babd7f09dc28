//! Helpers shared by the NATS integration tests: the server lock, a raw JetStream client for
//! publishing and inspecting, recording sinks and waiting on conditions with a deadline.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use async_trait::async_trait;
use riverbed_core::{BatchOutcome, Message, Outcome, Sink};
use riverbed_nats::NatsSourceConfig;

/// The server every test talks to.
pub const URL: &str = "nats://127.0.0.1:4222";
/// Its address, for the availability check.
pub const ADDR: &str = "127.0.0.1:4222";

/// Takes the server lock: shared for normal tests, exclusive for the restart test.
pub async fn server(exclusive: bool) -> riverbed_core::testing::ServiceLock {
    riverbed_core::testing::lock_service("nats", exclusive).await
}

/// Whether the server answers (fails instead under `RIVERBED_REQUIRE_SERVICES=1`).
pub fn available() -> bool {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    riverbed_core::testing::require_service("NATS", ADDR)
}

/// A stream name no other test or run uses (letters, digits, `_` and `-` only).
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "rbtest_{prefix}_{}_{}",
        std::process::id(),
        nanos % 1_000_000_000
    )
}

/// How long a pipeline in a test may take to reach its goal.
pub const LIMIT: Duration = Duration::from_secs(45);

/// Runs a test body, failing it if it takes longer than two minutes.
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

/// Runs `pipeline` until `done` holds, then stops it and returns its report.
pub async fn run_until(
    pipeline: riverbed_core::Pipeline,
    what: &'static str,
    done: impl Fn() -> bool + Send + 'static,
) -> riverbed_core::Report {
    let shutdown = async move { wait_until(what, LIMIT, done).await };
    pipeline.run(shutdown).await.expect("pipeline runs")
}

/// The source configuration for `stream` / `durable`, plus `extra` TOML lines.
pub fn source_config(stream: &str, durable: &str, extra: &str) -> NatsSourceConfig {
    let text =
        format!("servers = [\"{URL}\"]\nstream = \"{stream}\"\ndurable = \"{durable}\"\n{extra}");
    toml::from_str(&text).expect("test config parses")
}

/// A raw JetStream client, for creating streams, publishing and inspecting in tests.
pub struct Raw {
    pub js: jetstream::Context,
}

/// Deletes the streams when dropped, so a failing test leaves nothing behind.
pub struct DeleteStreams(pub Vec<String>);

impl Drop for DeleteStreams {
    fn drop(&mut self) {
        let names = std::mem::take(&mut self.0);
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                if let Ok(c) = async_nats::connect(URL).await {
                    let js = jetstream::new(c);
                    for n in names {
                        let _ = js.delete_stream(&n).await;
                    }
                }
            });
        });
        let _ = cleanup.join();
    }
}

impl Raw {
    pub async fn connect() -> Raw {
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect(URL)
            .await
            .expect("test connection");
        Raw {
            js: jetstream::new(client),
        }
    }

    /// Creates stream `name` capturing `subjects`, file storage.
    pub async fn create_stream(&self, name: &str, subjects: &[&str]) {
        self.js
            .create_stream(stream::Config {
                name: name.to_owned(),
                subjects: subjects.iter().map(|s| s.to_string()).collect(),
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .expect("stream created");
    }

    /// Publishes `from..to` to `subject_prefix.<n % keys>` with message id `m<n>` and a JSON
    /// body `{"n": n}`, awaiting each ack.
    pub async fn publish_range(&self, subject_prefix: &str, from: usize, to: usize, keys: usize) {
        let mut acks = Vec::new();
        for n in from..to {
            let subject = format!("{subject_prefix}.k{}", n % keys);
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", format!("m{n}").as_str());
            headers.insert("x-test", "yes");
            let body = format!("{{\"n\":{n}}}");
            acks.push(
                self.js
                    .publish_with_headers(subject, headers, body.into())
                    .await
                    .expect("published"),
            );
        }
        for a in acks {
            a.await.expect("publish acked");
        }
    }

    /// The consumer's info as the server sees it now.
    pub async fn consumer_info(&self, stream: &str, durable: &str) -> consumer::Info {
        let s = self.js.get_stream(stream).await.expect("stream exists");
        s.consumer_info(durable).await.expect("consumer exists")
    }

    /// How many messages stream `name` holds.
    pub async fn messages_in(&self, name: &str) -> u64 {
        let mut s = self.js.get_stream(name).await.expect("stream exists");
        s.info().await.expect("stream info").state.messages
    }

    /// The message at `seq` in stream `name`.
    pub async fn message(&self, name: &str, seq: u64) -> jetstream::message::StreamMessage {
        let s = self.js.get_stream(name).await.expect("stream exists");
        s.get_raw_message(seq).await.expect("message exists")
    }
}

/// What a recording sink saw of one message.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub id: String,
    pub position: Option<u64>,
    pub attempt: u32,
    pub subject: Option<String>,
}

type Rule = dyn Fn(&Message) -> Outcome + Send + Sync;

/// A sink that records every message it commits, failing where its rule says, optionally
/// slowed down so a test can act while messages are in flight.
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
