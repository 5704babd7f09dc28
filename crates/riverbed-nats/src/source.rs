//! `NatsSource`: consumes a JetStream stream through a durable pull consumer with explicit
//! acks, and renews its pull (and binding) whenever the stream of deliveries falters.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use async_trait::async_trait;
use futures::{FutureExt, StreamExt};
use riverbed_core::{Acker, Backoff, Capabilities, DeadLetterSink, Delivery, Source, SourceError};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::acker::AckShared;
use crate::config::NatsSourceConfig;
use crate::connect::{connect, context, ensure_stream};
use crate::dead_letter::NatsDeadLetters;
use crate::delivery::receive;
use crate::error::{Error, Result, jetstream};
use crate::settings::SourceSettings;
use crate::status::SourceStatus;

mod consumer;

type Item = Option<Result<async_nats::jetstream::Message, pull::MessagesError>>;

/// A JetStream source: a durable pull consumer (created if missing, bound if it exists) with
/// explicit acks.
///
/// - Each delivery is acknowledged (`+ACK`) only when the pipeline settles it, after every
///   sink committed it or its dead letter was stored. Deliveries still unsettled past half of
///   `ack_wait` get an in-progress ack (`+WPI`), so a slow sink or a long in-process retry
///   never makes the server redeliver work in progress. A broker retry is a `-NAK` with the
///   retry's delay; a delivery given back at shutdown is a `-NAK` without one.
/// - `max_ack_pending` bounds what the server hands out unacknowledged: backpressure reaches
///   the server.
/// - The client reconnects by itself. On top of that, a missed idle heartbeat, a failed pull
///   request, a deleted consumer or an ended subscription drops the pull and binds the
///   consumer again (creating it if the server lost it), with a jittered backoff: a
///   reconnect between two pull requests cannot leave the source silently stalled.
/// - Metadata: the stream sequence is the `position`, the delivered count the `attempt`,
///   `Nats-Msg-Id` the message id, the publish time the timestamp, the subject the subject
///   and the stream the `exchange`; the consumer sequence is in the
///   `Nats-Consumer-Sequence` header.
pub struct NatsSource {
    settings: SourceSettings,
    client: Option<async_nats::Client>,
    messages: Option<pull::Stream>,
    backoff: Backoff,
    retry_at: Option<Instant>,
    acker: Arc<AckShared>,
    status: Arc<SourceStatus>,
    dead_letters: Arc<NatsDeadLetters>,
    tasks: Vec<JoinHandle<()>>,
    closed: bool,
    /// Recreate the durable from its ack floor at the first bind (see [`Self::take_over`]).
    take_over: bool,
    /// Where a taken-over durable starts again, until it is created.
    take_over_start: Option<u64>,
}

impl NatsSource {
    /// Checks `config` and builds the source. Nothing connects until the first `recv`.
    pub fn new(config: NatsSourceConfig) -> Result<Self> {
        let settings = SourceSettings::try_from(config)?;
        let status = Arc::new(SourceStatus::default());
        let dead_letters = Arc::new(NatsDeadLetters::from_parts(
            settings.connection.clone(),
            settings.dead_letters.clone(),
        ));
        Ok(NatsSource {
            backoff: Backoff::new(settings.reconnect_initial, settings.reconnect_max),
            acker: Arc::new(AckShared::new(settings.ack_wait, status.clone())),
            status,
            dead_letters,
            client: None,
            messages: None,
            retry_at: None,
            tasks: Vec::new(),
            closed: false,
            take_over: false,
            take_over_start: None,
            settings,
        })
    }

    /// Sets `max_ack_pending` unless the configuration named one: pass the pipeline's
    /// `max_in_flight`, so the server never hands out more than the pipeline holds.
    pub fn with_default_max_ack_pending(mut self, n: u32) -> Self {
        if !self.settings.max_ack_pending_set {
            self.settings.max_ack_pending = n.max(1);
        }
        self
    }

    /// Resumes after stream sequence `seq`, such as the position stored with the sink's data:
    /// a new durable starts at `seq + 1`, and deliveries of an existing one at or before
    /// `seq` are acknowledged without being handed over.
    pub fn resume_after(mut self, seq: u64) -> Self {
        self.settings.deliver = DeliverPolicy::ByStartSequence {
            start_sequence: seq + 1,
        };
        self.acker.skip_through(seq);
        self
    }

    /// Takes the durable over at the first bind: when deliveries of it are pending (another
    /// instance consumed it and stopped without settling them), it is created again right
    /// after its ack floor, so they come again first, in order, instead of after `ack_wait`
    /// behind newer messages. Only for a durable this instance alone may consume (a lease per
    /// partition).
    pub fn take_over(mut self) -> Self {
        self.take_over = true;
        self
    }

    /// Live counters: acks, naks, in-progress acks, pull renewals.
    pub fn status(&self) -> Arc<SourceStatus> {
        self.status.clone()
    }

    /// Joins the stream `bucket` of the instances sharing this source's stream as `id`, on a
    /// connection of its own (see [`crate::Members`]).
    pub async fn members(&self, bucket: &str, id: &str, ttl: Duration) -> Result<crate::Members> {
        crate::Members::join(&self.settings.connection, bucket, id, ttl).await
    }

    /// The durable's consumer lag, asked on a connection of its own.
    pub fn backlog_probe(&self) -> crate::NatsBacklog {
        let s = &self.settings;
        crate::NatsBacklog::new(s.connection.clone(), s.stream.clone(), s.durable.clone())
    }

    /// The source's dead-letter destination.
    pub fn dead_letter_destination(&self) -> Arc<NatsDeadLetters> {
        self.dead_letters.clone()
    }

    /// Creates what the source needs on the server, without consuming: its stream (file
    /// storage, limits retention) when `stream_subjects` are given, else checks that it
    /// exists, and its dead-letter stream. Messages published from then on are kept for the
    /// durable, which its first run creates from `deliver`. Returns the stream's subjects.
    pub async fn declare(&self) -> Result<Vec<String>> {
        let s = &self.settings;
        let js = context(connect(&s.connection).await?, s.connection.timeout);
        let stream = if s.stream_subjects.is_empty() {
            js.get_stream(&s.stream)
                .await
                .map_err(|e| jetstream(format!("find stream `{}`", s.stream), e))?
        } else {
            ensure_stream(&js, &s.stream, &s.stream_subjects).await?
        };
        // Finding or creating the stream returned its info.
        let subjects = stream.cached_info().config.subjects.clone();
        self.dead_letters.connect().await?;
        Ok(subjects)
    }

    /// Connects if needed, finds the stream, binds the consumer and starts pulling.
    async fn establish(&mut self) -> Result<()> {
        let s = &self.settings;
        let client = match &self.client {
            Some(c) => c.clone(),
            None => {
                let c = connect(&s.connection).await?;
                self.tasks.extend(self.acker.spawn(c.clone()));
                self.client = Some(c.clone());
                c
            }
        };
        let js = context(client, s.connection.timeout);
        let stream = if s.stream_subjects.is_empty() {
            js.get_stream(&s.stream)
                .await
                .map_err(|e| jetstream(format!("find stream `{}`", s.stream), e))?
        } else {
            ensure_stream(&js, &s.stream, &s.stream_subjects).await?
        };
        if self.take_over {
            // Kept until the durable exists again: a bind that fails after the delete must not
            // create it from `deliver` (the whole history).
            self.take_over_start = consumer::take_over_from_ack_floor(&stream, s).await?;
            self.take_over = false;
        }
        let start = self.take_over_start.or(self.acker.resume_point());
        let consumer = consumer::bind(&stream, s, start).await?;
        self.take_over_start = None;
        let messages = consumer
            .stream()
            .max_messages_per_batch(s.batch.min(s.max_ack_pending as usize))
            .expires(s.expires)
            .heartbeat(s.idle_heartbeat)
            .messages()
            .await
            .map_err(|e| jetstream("start pulling", e))?;
        tracing::info!(
            stream = %s.stream,
            durable = %s.durable,
            server = %s.connection.servers[0],
            "Pulling from JetStream"
        );
        self.messages = Some(messages);
        self.status.set_pulling();
        Ok(())
    }

    /// Unsubscribes the pull, then gives back what the pipeline left unsettled: the server
    /// redelivers it to the next consumer at once. nats-server 2.9 may still hand some of it
    /// to this pull's last waiting request (it does not notice the lost interest); those come
    /// back after `ack_wait`, as without the nak.
    async fn give_back(&mut self) {
        self.messages = None;
        let limit = self.settings.connection.timeout;
        let mut flushed = self.acker.flush(limit).await;
        let given_back = self.acker.give_back_unsettled();
        if given_back > 0 {
            tracing::info!(
                deliveries = given_back,
                "Unsettled deliveries given back to the server"
            );
            flushed = self.acker.flush(limit).await;
        }
        if !flushed {
            tracing::warn!(
                "The last acknowledgements were not flushed; the server redelivers them"
            );
        }
    }

    /// Drops the pull and schedules binding again after `delay`.
    fn renew(&mut self, why: &str, delay: Duration) {
        self.messages = None;
        self.status
            .set_stopped(&format!("renewing the pull: {why}"));
        self.status.add_renewal();
        self.retry_at = Some(Instant::now() + delay);
        tracing::warn!(
            stream = %self.settings.stream,
            durable = %self.settings.durable,
            reason = why,
            retry_in_ms = delay.as_millis() as u64,
            "Renewing the JetStream pull"
        );
    }

    /// Takes `first` and whatever else is ready without waiting, up to `max`, into `out`.
    fn take(&mut self, first: Item, out: &mut Vec<Delivery>, max: usize) {
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(item) = next.take() {
            match item {
                Some(Ok(m)) => {
                    taken += 1;
                    if let Some(d) = receive(m).and_then(|r| self.acker.register(r)) {
                        out.push(d);
                    }
                }
                Some(Err(e)) => {
                    // A missed heartbeat is renewed at once; other errors back off.
                    let delay = match e.kind() {
                        pull::MessagesErrorKind::MissingHeartbeat => Duration::ZERO,
                        _ => self.backoff.next_delay(),
                    };
                    self.renew(&e.to_string(), delay);
                    return;
                }
                None => {
                    let delay = self.backoff.next_delay();
                    self.renew("the subscription ended", delay);
                    return;
                }
            }
            if taken < max {
                next = self.messages.as_mut().and_then(|m| m.next().now_or_never());
            }
        }
        self.backoff.reset();
    }
}

#[async_trait]
impl Source for NatsSource {
    fn describe(&self) -> String {
        format!(
            "nats stream `{}` durable `{}` at {}",
            self.settings.stream, self.settings.durable, self.settings.connection.servers[0]
        )
    }

    async fn recv(&mut self, out: &mut Vec<Delivery>, max: usize) -> Result<bool, SourceError> {
        let max = max.max(1);
        loop {
            if self.closed {
                return Ok(false);
            }
            if let Some(at) = self.retry_at {
                tokio::time::sleep_until(at).await;
                self.retry_at = None;
            }
            if self.messages.is_none() {
                match self.establish().await {
                    Ok(()) => {}
                    Err(e @ Error::Config { .. }) => {
                        self.status.set_stopped(&e.to_string());
                        return Err(SourceError::Config(e.to_string()));
                    }
                    Err(e) => {
                        self.status.set_stopped(&format!("cannot pull: {e}"));
                        let delay = self.backoff.next_delay();
                        tracing::error!(
                            error = %e,
                            retry_in_ms = delay.as_millis() as u64,
                            "Cannot pull from JetStream"
                        );
                        self.retry_at = Some(Instant::now() + delay);
                        continue;
                    }
                }
            }
            let first = self
                .messages
                .as_mut()
                .expect("established just above")
                .next()
                .await;
            let before = out.len();
            self.take(first, out, max);
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
            delayed_retry: true,
            window: Some(self.settings.max_ack_pending as usize),
        }
    }

    fn dead_letters(&self) -> Option<Arc<dyn DeadLetterSink>> {
        Some(self.dead_letters.clone())
    }

    async fn close(&mut self) -> Result<(), SourceError> {
        self.closed = true;
        if self.client.is_some() {
            self.give_back().await;
        }
        for t in self.tasks.drain(..) {
            t.abort();
        }
        Ok(())
    }
}

impl Drop for NatsSource {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
