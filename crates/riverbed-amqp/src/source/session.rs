//! Opening a consuming session (connect, declare, consume) and ending a lost one.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use futures::stream::{BoxStream, SelectAll};
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, Consumer};
use riverbed_core::SourceError;
use tokio::time::Instant;

use super::AmqpSource;
use crate::error::{Error, Result};
use crate::settings::{StreamStart, short};
use crate::topology;
use crate::window::GEN_MASK;

/// What the consumers of a session yield: the index of the queue, and its next item (`None`
/// when that consumer ended).
pub(super) type FeedItem = (usize, Option<lapin::Result<lapin::message::Delivery>>);

/// The consumers of a session (one per queue, all on its channel) as one stream.
pub(super) type Feed = SelectAll<BoxStream<'static, FeedItem>>;

/// One connection and channel, with a consumer per queue: a generation of deliveries.
pub(super) struct Session {
    pub connection: Connection,
    pub channel: Channel,
    pub feed: Feed,
    pub generation: u32,
    /// The queues consumed, in feed index order.
    pub queues: Vec<String>,
    /// The queues for logs: the name, or `<queue>.0..<n-1>` for partition queues.
    pub queue: String,
    /// Stream deliveries below this offset are skipped (chunks start before the asked offset).
    pub floor: Option<u64>,
    /// Why the session ended, once it did.
    pub lost: Option<String>,
}

/// How far before its first attach a `next`/`last` stream consumer that never received
/// anything resumes after a reconnect.
pub(super) const REATTACH_MARGIN: Duration = Duration::from_secs(60);

impl AmqpSource {
    /// The `x-stream-offset` to consume from, and the floor below which deliveries are skipped.
    ///
    /// After the settled prefix (or the first offset received) when there is one. A consumer
    /// that attached at `next` or `last` and reconnects before its first delivery resumes from
    /// [`REATTACH_MARGIN`] before the time of that first attach instead: asking for `next`
    /// again would skip whatever was published during the outage. The margin covers the
    /// difference between this host's clock and the broker's (chunk timestamps are the
    /// broker's) and the chunk `last` would have started with; it delivers again what was
    /// published shortly before the first attach, which sinks absorb like any redelivery.
    fn stream_position(&self) -> Option<(AMQPValue, Option<u64>)> {
        let start = self.settings.stream?;
        if let Some(n) = self.acker.resume_offset() {
            return Some((AMQPValue::LongLongInt(n as i64), Some(n)));
        }
        Some(match (start, self.first_attach) {
            (StreamStart::Next | StreamStart::Last, Some(at)) => {
                (timestamp(at - REATTACH_MARGIN), None)
            }
            (StreamStart::First, _) => (AMQPValue::LongString("first".into()), None),
            (StreamStart::Last, None) => (AMQPValue::LongString("last".into()), None),
            (StreamStart::Next, None) => (AMQPValue::LongString("next".into()), None),
            (StreamStart::Offset(n), _) => (AMQPValue::LongLongInt(n as i64), Some(n)),
            (StreamStart::Timestamp(t), _) => (timestamp(t), None),
        })
    }

    /// Connects, declares the topology and starts consuming: one new generation.
    pub(super) async fn open_session(&mut self) -> Result<Session> {
        let s = &self.settings;
        let (connection, url) = self.connector.connect().await?;
        let channel = connection.create_channel().await?;
        channel
            .basic_qos(s.prefetch, BasicQosOptions { global: false })
            .await?;
        let queues = topology::declare_source(&connection, &channel, s).await?;
        let mut args = FieldTable::default();
        let position = self.stream_position();
        let floor = position.as_ref().and_then(|(_, f)| *f);
        if let Some((offset, _)) = position {
            args.insert("x-stream-offset".into(), offset);
        }
        let attaching_at = SystemTime::now();
        let mut feed = Feed::new();
        // RabbitMQ makes the first consumer of a single-active-consumer queue the active one:
        // instances that start together subscribe in different orders, so they share the
        // partition queues instead of the fastest taking them all.
        let spread = std::process::id()
            ^ attaching_at
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
        let first = spread as usize % queues.len();
        let order = (first..queues.len()).chain(0..first);
        for (i, queue) in order.map(|i| (i, &queues[i])) {
            // Consumer tags are unique per channel: one per partition queue.
            let tag = match (queues.len(), s.consumer_tag.is_empty()) {
                (1, _) | (_, true) => s.consumer_tag.clone(),
                _ => format!("{}.{i}", s.consumer_tag),
            };
            let consumer = channel
                .basic_consume(
                    short("queue", queue)?,
                    short("consumer_tag", &tag)?,
                    BasicConsumeOptions::default(),
                    args.clone(),
                )
                .await
                .map_err(|source| Error::Topology {
                    action: format!("consume queue `{queue}`"),
                    source,
                })?;
            feed.push(fed(i, consumer));
        }
        let queue = match queues.as_slice() {
            [one] => one.clone(),
            _ => format!("{}.0..{}", s.queue.name, queues.len() - 1),
        };
        if s.stream.is_some() && self.first_attach.is_none() {
            self.first_attach = Some(attaching_at);
        }
        let generation = self.next_generation;
        self.next_generation = (generation + 1) & GEN_MASK;
        // No await from here until the session is stored: a cancelled `recv` cannot leave a
        // generation installed without its session.
        self.acker.install(generation, Arc::new(channel.clone()));
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
            feed,
            generation,
            queues,
            queue,
            floor,
            lost: None,
        })
    }

    /// Opens a session, retrying with backoff forever, except for errors that cannot heal
    /// before the first session succeeded (bad credentials, mismatched queue arguments).
    pub(super) async fn establish(&mut self) -> Result<(), SourceError> {
        self.start_tasks();
        loop {
            if let Some(at) = self.retry_at {
                tokio::time::sleep_until(at).await;
            }
            match self.open_session().await {
                Ok(session) => {
                    self.retry_at = None;
                    self.reconnect.opened(Instant::now());
                    self.ever_connected = true;
                    self.status.session_opened(&session.queue);
                    self.session = Some(session);
                    return Ok(());
                }
                Err(e) if e.is_fatal() && !self.ever_connected => {
                    self.status.disconnected(&e.to_string());
                    tracing::error!(
                        queue = %self.settings.queue.name,
                        error = %e,
                        "Cannot consume"
                    );
                    return Err(SourceError::Config(e.to_string()));
                }
                Err(e) => {
                    self.status
                        .disconnected(&format!("cannot connect or consume: {e}"));
                    let delay = self.reconnect.failed();
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
    pub(super) async fn end_session(&mut self) {
        let Some(reason) = self.session.as_ref().and_then(|s| s.lost.clone()) else {
            return;
        };
        self.status
            .disconnected(&format!("consumer lost: {reason}"));
        self.acker.retire().await;
        if let Some(s) = self.session.take() {
            let delay = self.reconnect.lost(Instant::now());
            self.retry_at = (!delay.is_zero()).then(|| Instant::now() + delay);
            tracing::warn!(
                queue = %s.queue,
                generation = s.generation,
                reason = %reason,
                retry_in_ms = delay.as_millis() as u64,
                "Consumer lost; reconnecting"
            );
        }
    }
}

/// Consumer `i` as a feed: its items tagged with `i`, then `(i, None)` when it ends (the
/// broker cancelled it), so the end of one consumer among several is seen.
fn fed(i: usize, consumer: Consumer) -> BoxStream<'static, FeedItem> {
    consumer
        .map(move |item| (i, Some(item)))
        .chain(futures::stream::once(async move { (i, None) }))
        .boxed()
}

/// A stream offset at `t`, rounded down to the second (the precision AMQP timestamps have).
fn timestamp(t: SystemTime) -> AMQPValue {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    AMQPValue::Timestamp(secs)
}
