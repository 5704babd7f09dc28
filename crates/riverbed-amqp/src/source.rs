//! `AmqpSource`: consumes a RabbitMQ queue or stream with manual acks, and reconnects by itself.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::{FutureExt, StreamExt};
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, Consumer};
use riverbed_core::{Acker, Backoff, Capabilities, DeadLetterSink, Delivery, Source, SourceError};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::acker::AckShared;
use crate::config::AmqpSourceConfig;
use crate::connect::Connector;
use crate::dead_letter::AmqpDeadLetters;
use crate::delivery::receive;
use crate::error::{Error, Result};
use crate::publisher::{Publisher, Topology};
use crate::retry::{self, RetryJob};
use crate::settings::{SourceSettings, StreamStart, short};
use crate::status::SourceStatus;
use crate::topology;
use crate::window::GEN_MASK;

/// One connection, channel and consumer: a generation of deliveries.
struct Session {
    connection: Connection,
    channel: Channel,
    consumer: Consumer,
    generation: u32,
    queue: String,
    /// Stream deliveries below this offset are skipped (chunks start before the asked offset).
    floor: Option<u64>,
    /// Why the session ended, once it did.
    lost: Option<String>,
}

/// A RabbitMQ source: a classic or quorum queue, a server-named exclusive queue, or a stream.
///
/// It owns its reconnect loop: when the connection or channel is lost, or the broker cancels
/// the consumer, it reconnects with jittered exponential backoff, rotating through the URLs,
/// declares its exchanges, queue and bindings again (a server-named queue gets a new name) and
/// resumes. Deliveries carry a token naming their channel generation, so a settlement for a
/// delivery of a dead channel is dropped (the broker redelivers the message) and no ack ever
/// reaches a channel that did not deliver it.
///
/// Acknowledgements are coalesced: completed deliveries are acknowledged with one cumulative
/// `basic.ack` up to the highest contiguous completed delivery, every `ack_interval` or at once
/// when half the prefetch window waits.
pub struct AmqpSource {
    settings: SourceSettings,
    connector: Connector,
    backoff: Backoff,
    retry_at: Option<Instant>,
    session: Option<Session>,
    next_generation: u32,
    ever_connected: bool,
    closed: bool,
    acker: Arc<AckShared>,
    status: Arc<SourceStatus>,
    dead_letters: Option<Arc<AmqpDeadLetters>>,
    retry_jobs: Option<mpsc::UnboundedReceiver<RetryJob>>,
    tasks: Vec<JoinHandle<()>>,
}

impl AmqpSource {
    /// Checks `config` and builds the source. Nothing connects until the first `recv`.
    pub fn new(config: AmqpSourceConfig) -> Result<Self> {
        Ok(Self::from_settings(SourceSettings::try_from(config)?))
    }

    fn from_settings(settings: SourceSettings) -> Self {
        let status = Arc::new(SourceStatus::default());
        let (retry_tx, retry_jobs) = match settings.retry {
            Some(_) => {
                let (tx, rx) = mpsc::unbounded_channel();
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        let acker = Arc::new(AckShared::new(
            usize::from(settings.prefetch) / 2,
            settings.stream.is_some(),
            retry_tx,
            status.clone(),
        ));
        let dead_letters = settings.dead_letter_queue.clone().map(|queue| {
            Arc::new(AmqpDeadLetters::from_parts(
                &settings.connection,
                queue,
                settings.confirm_timeout,
            ))
        });
        let c = &settings.connection;
        AmqpSource {
            connector: Connector::new(c.urls.clone(), c.name.clone(), c.connect_timeout),
            backoff: Backoff::new(c.reconnect_initial, c.reconnect_max),
            retry_at: None,
            session: None,
            next_generation: 1,
            ever_connected: false,
            closed: false,
            acker,
            status,
            dead_letters,
            retry_jobs,
            tasks: Vec::new(),
            settings,
        }
    }

    /// Resumes a stream after `offset`, such as the last offset stored with the sink's data:
    /// the first delivery will be `offset + 1`. Later reconnects resume after the highest
    /// settled offset. Only streams have offsets: for a queue this does nothing.
    pub fn resume_after(self, offset: u64) -> Self {
        if self.settings.stream.is_some() {
            self.acker.resume_after(offset);
        } else {
            tracing::warn!(queue = %self.settings.queue.name, "resume_after ignored: not a stream");
        }
        self
    }

    /// Live counters: reconnects, ack frames, the current queue name.
    pub fn status(&self) -> Arc<SourceStatus> {
        self.status.clone()
    }

    /// The default dead-letter queue of this source (`<queue>.dlq` unless configured), if any.
    pub fn dead_letter_queue(&self) -> Option<Arc<AmqpDeadLetters>> {
        self.dead_letters.clone()
    }

    /// Starts the ack flusher and the retry worker (needs a runtime, hence not in `new`).
    fn start_tasks(&mut self) {
        if !self.tasks.is_empty() {
            return;
        }
        self.tasks
            .push(self.acker.spawn_flusher(self.settings.ack_interval));
        if let (Some(jobs), Some(spec)) = (self.retry_jobs.take(), self.settings.retry.clone()) {
            let publisher = Publisher::new(
                &self.settings.connection,
                Topology::default(),
                self.settings.confirm_timeout,
                "retry",
            );
            self.tasks.push(tokio::spawn(retry::run(
                jobs,
                publisher,
                spec,
                self.settings.queue.name.clone(),
                Arc::downgrade(&self.acker),
            )));
        }
    }

    /// The `x-stream-offset` to consume from, and the floor below which deliveries are skipped.
    fn stream_position(&self) -> Option<(AMQPValue, Option<u64>)> {
        let start = self.settings.stream?;
        if let Some(n) = self.acker.resume_offset() {
            return Some((AMQPValue::LongLongInt(n as i64), Some(n)));
        }
        Some(match start {
            StreamStart::First => (AMQPValue::LongString("first".into()), None),
            StreamStart::Last => (AMQPValue::LongString("last".into()), None),
            StreamStart::Next => (AMQPValue::LongString("next".into()), None),
            StreamStart::Offset(n) => (AMQPValue::LongLongInt(n as i64), Some(n)),
            StreamStart::Timestamp(t) => {
                let secs = t
                    .duration_since(std::time::SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                (AMQPValue::Timestamp(secs), None)
            }
        })
    }

    /// Connects, declares the topology and starts consuming: one new generation.
    async fn open_session(&mut self) -> Result<Session> {
        let s = &self.settings;
        let (connection, url) = self.connector.connect().await?;
        let channel = connection.create_channel().await?;
        channel
            .basic_qos(s.prefetch, BasicQosOptions { global: false })
            .await?;
        topology::declare_exchanges(&channel, &s.exchanges).await?;
        let queue = topology::declare_queue(&channel, &s.queue).await?;
        topology::bind(&channel, &queue, &s.bindings).await?;
        if let Some(dlq) = &s.dead_letter_queue {
            topology::declare_queue(&channel, dlq).await?;
        }
        let mut args = FieldTable::default();
        let position = self.stream_position();
        let floor = position.as_ref().and_then(|(_, f)| *f);
        if let Some((offset, _)) = position {
            args.insert("x-stream-offset".into(), offset);
        }
        let consumer = channel
            .basic_consume(
                short("queue", &queue)?,
                short("consumer_tag", &s.consumer_tag)?,
                BasicConsumeOptions::default(),
                args,
            )
            .await
            .map_err(|source| Error::Topology {
                action: format!("consume queue `{queue}`"),
                source,
            })?;
        let generation = self.next_generation;
        self.next_generation = (generation + 1) & GEN_MASK;
        // No await from here until the session is stored: a cancelled `recv` cannot leave a
        // generation installed without its session.
        self.acker.install(generation, channel.clone());
        self.acker.resumed();
        tracing::info!(
            queue = %queue,
            url = %url,
            generation,
            stream_offset = floor,
            "Consuming"
        );
        Ok(Session {
            connection,
            channel,
            consumer,
            generation,
            queue,
            floor,
            lost: None,
        })
    }

    /// Opens a session, retrying with backoff forever, except for errors that cannot heal
    /// before the first session succeeded (bad credentials, mismatched queue arguments).
    async fn establish(&mut self) -> Result<(), SourceError> {
        self.start_tasks();
        loop {
            if let Some(at) = self.retry_at {
                tokio::time::sleep_until(at).await;
            }
            match self.open_session().await {
                Ok(session) => {
                    self.retry_at = None;
                    self.backoff.reset();
                    self.ever_connected = true;
                    self.status.session_opened(&session.queue);
                    self.session = Some(session);
                    return Ok(());
                }
                Err(e) if e.is_fatal() && !self.ever_connected => {
                    tracing::error!(queue = %self.settings.queue.name, error = %e, "Cannot consume");
                    return Err(SourceError::Config(e.to_string()));
                }
                Err(e) => {
                    let delay = self.backoff.next_delay();
                    self.retry_at = Some(Instant::now() + delay);
                    metrics::counter!("riverbed_amqp_connect_failures_total", "role" => "source")
                        .increment(1);
                    tracing::warn!(
                        queue = %self.settings.queue.name,
                        error = %e,
                        retry_in_ms = delay.as_millis() as u64,
                        "Cannot consume; retrying"
                    );
                }
            }
        }
    }

    /// Ends a lost session: sends what its channel can still take, then forgets it.
    async fn end_session(&mut self) {
        let Some(reason) = self.session.as_ref().and_then(|s| s.lost.clone()) else {
            return;
        };
        self.acker.retire().await;
        if let Some(s) = self.session.take() {
            tracing::warn!(
                queue = %s.queue,
                generation = s.generation,
                reason = %reason,
                "Consumer lost; reconnecting"
            );
        }
    }
}

#[async_trait]
impl Source for AmqpSource {
    fn describe(&self) -> String {
        let q = &self.settings.queue.name;
        let what = match (self.settings.stream.is_some(), q.is_empty()) {
            (true, _) => format!("stream `{q}`"),
            (false, true) => "server-named queue".to_owned(),
            (false, false) => format!("queue `{q}`"),
        };
        format!("amqp {what} at {}", self.settings.connection.urls[0])
    }

    async fn recv(&mut self, out: &mut Vec<Delivery>, max: usize) -> Result<bool, SourceError> {
        if self.closed {
            return Ok(false);
        }
        loop {
            self.end_session().await;
            if self.session.is_none() {
                self.establish().await?;
            }
            let session = self.session.as_mut().expect("established above");
            // The only await: the consumer keeps deliveries until they are taken, so dropping
            // this future loses nothing.
            let first = session.consumer.next().await;
            let mut received = Vec::new();
            let mut next = Some(first);
            while let Some(item) = next.take() {
                match item {
                    Some(Ok(d)) => received.push(receive(d)),
                    Some(Err(e)) => session.lost = Some(e.to_string()),
                    None => session.lost = Some("consumer cancelled by the broker".into()),
                }
                if session.lost.is_none() && received.len() < max.max(1) {
                    next = session.consumer.next().now_or_never();
                }
            }
            let before = out.len();
            self.acker
                .register(session.generation, received.into_iter(), session.floor, out);
            if out.len() > before {
                return Ok(true);
            }
        }
    }

    fn acker(&self) -> Arc<dyn Acker> {
        self.acker.clone()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            delayed_retry: self.settings.retry.is_some(),
        }
    }

    fn dead_letters(&self) -> Option<Arc<dyn DeadLetterSink>> {
        self.dead_letters
            .clone()
            .map(|d| d as Arc<dyn DeadLetterSink>)
    }

    async fn close(&mut self) -> Result<(), SourceError> {
        self.closed = true;
        self.acker
            .wait_for_retries(self.settings.confirm_timeout + Duration::from_secs(1))
            .await;
        self.acker.retire().await;
        if let Some(s) = self.session.take() {
            let _ = s.channel.close(200, "OK".into()).await;
            let _ = s.connection.close(200, "OK".into()).await;
        }
        for t in self.tasks.drain(..) {
            t.abort();
        }
        if let Some(d) = &self.dead_letters {
            d.close().await;
        }
        Ok(())
    }
}

impl Drop for AmqpSource {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
