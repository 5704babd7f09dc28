//! `AmqpSource`: consumes a RabbitMQ queue or stream with manual acks, and reconnects by itself.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use futures::{FutureExt, StreamExt};
use riverbed_core::{
    Acker, Backoff, Capabilities, DeadLetterRoute, DeadLetterSink, Delivery, Source, SourceError,
    Stats,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::acker::AckShared;
use crate::config::AmqpSourceConfig;
use crate::connect::{Connector, close_within};
use crate::dead_letter::AmqpDeadLetters;
use crate::delivery::receive;
use crate::error::Result;
use crate::publisher::{Publisher, Topology};
use crate::retry::{self, RetryJob};
use crate::settings::SourceSettings;
use crate::status::SourceStatus;
use crate::topology;

mod reconnect;
mod session;

/// With fewer deliveries than this at hand, `recv` lingers to collect more.
const LINGER_BELOW: usize = 64;

use reconnect::Reconnect;
use session::{FeedItem, Session};

/// A RabbitMQ source: a classic or quorum queue, a server-named exclusive queue, or a stream.
///
/// It owns its reconnect loop: when the connection or channel is lost, or the broker cancels
/// the consumer, it reconnects (at once after a session that lived a few seconds, else with
/// jittered exponential backoff, so a session that dies young never spins), rotating through
/// the URLs,
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
    reconnect: Reconnect,
    retry_at: Option<Instant>,
    session: Option<Session>,
    next_generation: u32,
    /// When a stream consumer first attached: where it resumes if it reconnects before its
    /// first delivery.
    first_attach: Option<SystemTime>,
    ever_connected: bool,
    closed: bool,
    acker: Arc<AckShared>,
    status: Arc<SourceStatus>,
    dead_letters: Option<Arc<AmqpDeadLetters>>,
    /// The pipeline's dead-letter path, for retries given up.
    route: Option<DeadLetterRoute>,
    retry_jobs: Option<mpsc::UnboundedReceiver<RetryJob>>,
    tasks: Vec<JoinHandle<()>>,
    /// Registered deliveries not yet handed to the pipeline.
    ready: Vec<Delivery>,
}

impl AmqpSource {
    /// Checks `config` and builds the source. Nothing connects until the first `recv`.
    pub fn new(config: AmqpSourceConfig) -> Result<Self> {
        Ok(Self::from_settings(SourceSettings::try_from(config)?))
    }

    /// Builds a source consuming `partitions` queues `<queue>.0` .. `<queue>.<n-1>` behind the
    /// consistent-hash exchange `<queue>`, each with a single active consumer: producers
    /// publish to the exchange with the key as routing key, and RabbitMQ gives each partition
    /// to one instance at a time, moving it when that instance goes away, so a key is never
    /// processed in two places at once. Every instance consumes every partition queue; the
    /// `prefetch` window applies to each. Broker retries are off (they would let later
    /// messages of a key overtake a failed one; retry in process instead). Needs the
    /// `rabbitmq_consistent_hash_exchange` plugin.
    pub fn partitioned(config: AmqpSourceConfig, partitions: std::num::NonZeroU16) -> Result<Self> {
        let mut settings = SourceSettings::try_from(config)?;
        let q = &settings.queue;
        if q.name.is_empty() || q.options.exclusive || settings.stream.is_some() {
            return Err(crate::error::config(
                "queue",
                "partitioned queues need a named, shared queue that is not a stream",
            ));
        }
        settings.partitions = Some(partitions.get());
        settings.retry = None;
        Ok(Self::from_settings(settings))
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
            connector: Connector::new(c),
            reconnect: Reconnect::new(
                c.reconnect_initial,
                c.reconnect_max,
                reconnect::HEALTHY_AFTER,
            ),
            retry_at: None,
            session: None,
            next_generation: 1,
            first_attach: None,
            ever_connected: false,
            closed: false,
            acker,
            status,
            dead_letters,
            route: None,
            retry_jobs,
            tasks: Vec::new(),
            ready: Vec::new(),
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

    /// The pipeline's `max_deliveries` (default 20): a quorum queue this source creates gets a
    /// delivery limit a bit above it and a dead-letter target (see the crate docs). Set it to
    /// the pipeline's value, here and wherever the queue is declared ahead.
    pub fn max_deliveries(mut self, max_deliveries: u32) -> Self {
        self.settings.limit_deliveries(max_deliveries);
        self
    }

    /// Live counters: reconnects, ack frames, the current queue name.
    pub fn status(&self) -> Arc<SourceStatus> {
        self.status.clone()
    }

    /// The queues' consumer lag, asked on a connection of its own; `None` for a stream or a
    /// server-named queue (no depth to ask for, or no name to ask it by).
    pub fn backlog_probe(&self) -> Option<crate::AmqpBacklog> {
        let s = &self.settings;
        if s.stream.is_some() || s.queue.name.is_empty() {
            return None;
        }
        let queues = match s.partitions {
            None => vec![s.queue.name.clone()],
            Some(n) => (0..n)
                .map(|i| topology::partition_queue(&s.queue.name, i))
                .collect(),
        };
        Some(crate::AmqpBacklog::new(&s.connection, queues))
    }

    /// The default dead-letter queue of this source (`<queue>.dlq` unless configured), if any.
    pub fn dead_letter_queue(&self) -> Option<Arc<AmqpDeadLetters>> {
        self.dead_letters.clone()
    }

    /// Declares the source's exchanges, queue, bindings and dead-letter queue once, without
    /// consuming, then disconnects; returns the queue's name.
    ///
    /// Run before anything publishes, this makes every message published from then on wait in
    /// the queue (or stream) for the source's first run, instead of being dropped by an
    /// exchange with nothing bound. A server-named or exclusive queue lives only as long as its
    /// consumer's connection, so declaring it ahead is refused.
    pub async fn declare(&self) -> Result<String> {
        self.check_declarable()?;
        let c = &self.settings.connection;
        let mut connector = Connector::new(c);
        let (connection, url) = connector.connect().await?;
        let declared = async {
            let channel = connection.create_channel().await?;
            let queues = topology::declare_source(&connection, &channel, &self.settings).await?;
            Ok::<_, crate::Error>((queues.join(", "), channel))
        }
        .await;
        let channel = declared.as_ref().ok().map(|(_, ch)| ch);
        close_within(c.connect_timeout, channel, Some(&connection)).await;
        let (queue, _) = declared?;
        tracing::info!(queue = %queue, url = %url, "Declared");
        Ok(queue)
    }

    fn check_declarable(&self) -> Result<()> {
        let q = &self.settings.queue;
        if q.name.is_empty() || q.options.exclusive {
            return Err(crate::error::config(
                "queue",
                "is server-named or exclusive: it lives only as long as its consumer's \
                 connection, so it cannot be declared ahead",
            ));
        }
        Ok(())
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
            let c = &self.settings.connection;
            let worker = retry::Worker {
                publisher,
                hold_limit: spec.hold_limit,
                spec,
                target: self.settings.queue.name.clone(),
                backoff: Backoff::new(c.reconnect_initial, c.reconnect_max),
                // Outside a pipeline, this source's own dead-letter queue.
                dead_letters: self.route.clone().or_else(|| {
                    let own = self.dead_letters.clone()?;
                    Some(DeadLetterRoute::new(own, Arc::new(Stats::default())))
                }),
                last_error: None,
            };
            self.tasks.push(tokio::spawn(retry::run(
                jobs,
                worker,
                Arc::downgrade(&self.acker),
                self.acker.closing(),
            )));
        }
    }
}

impl AmqpSource {
    fn session_mut(&mut self) -> &mut Session {
        self.session
            .as_mut()
            .expect("a session is established before deliveries are taken")
    }

    /// Takes `first` (an item the consumer yielded) and whatever else is ready without
    /// waiting, up to `max` in `ready`, registered with the acker in delivery order.
    fn take(&mut self, first: Option<Option<FeedItem>>, max: usize) {
        let max = max.max(1);
        let session = self.session.as_mut().expect("taking needs a session");
        let mut received = Vec::new();
        let mut next = first.or_else(|| session.feed.next().now_or_never());
        while let Some(item) = next.take() {
            match item {
                Some((q, Some(Ok(d)))) => received.push(receive(d, &session.queues[q])),
                Some((_, Some(Err(e)))) => session.lost = Some(e.to_string()),
                Some((q, None)) => {
                    session.lost = Some(format!(
                        "consumer of `{}` cancelled by the broker",
                        session.queues[q]
                    ))
                }
                None => session.lost = Some("consumer cancelled by the broker".into()),
            }
            if session.lost.is_none() && self.ready.len() + received.len() < max {
                next = session.feed.next().now_or_never();
            }
        }
        // The consumers of several queues share the channel's sequence of delivery tags;
        // registering a batch in tag order keeps cumulative acks possible (the acker stays
        // correct in any order). Each queue's own deliveries keep their order.
        received.sort_by_key(|r| r.tag);
        self.acker.register(
            session.generation,
            received.into_iter(),
            session.floor,
            &mut self.ready,
        );
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
            if !self.ready.is_empty() {
                let n = self.ready.len().min(max.max(1));
                out.extend(self.ready.drain(..n));
                return Ok(true);
            }
            self.end_session().await;
            if self.session.is_none() {
                self.establish().await?;
            }
            // Awaiting the consumer is cancel-safe: it keeps deliveries until they are taken.
            let first = self.session_mut().feed.next().await;
            self.take(Some(first), max);
            let linger = self.settings.linger;
            if !linger.is_zero()
                && self.ready.len() < max.min(LINGER_BELOW)
                && self.session_mut().lost.is_none()
            {
                // A trickle of deliveries would wake the whole pipeline for a few messages
                // each time: wait a moment for more. Taken deliveries wait in `ready`, so this
                // await is cancel-safe too.
                tokio::time::sleep(linger).await;
                self.take(None, max);
            }
        }
    }

    fn acker(&self) -> Arc<dyn Acker> {
        self.acker.clone()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            delayed_retry: self.settings.retry.is_some(),
            window: Some(usize::from(self.settings.prefetch)),
        }
    }

    fn dead_letters(&self) -> Option<Arc<dyn DeadLetterSink>> {
        self.dead_letters
            .clone()
            .map(|d| d as Arc<dyn DeadLetterSink>)
    }

    fn route_dead_letters(&mut self, route: DeadLetterRoute) {
        self.route = Some(route);
    }

    async fn close(&mut self) -> Result<(), SourceError> {
        self.closed = true;
        self.acker.begin_close();
        self.acker
            .wait_for_retries(self.settings.confirm_timeout + Duration::from_secs(1))
            .await;
        // Bounded: a broker that stopped answering must not hold the shutdown (what is not
        // acknowledged is redelivered).
        let limit = self.settings.connection.connect_timeout;
        if tokio::time::timeout(limit, self.acker.retire())
            .await
            .is_err()
        {
            tracing::warn!("The broker did not take the last acknowledgements; it redelivers them");
        }
        if let Some(s) = self.session.take()
            && !close_within(limit, [&s.channel], Some(&s.connection)).await
        {
            tracing::warn!("The broker did not answer the consumer's close; leaving without it");
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
