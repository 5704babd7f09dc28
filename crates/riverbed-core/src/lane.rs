//! A partition's batch for one sink: fills on size or time, writes one batch at a time, retries.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::message::Message;
use crate::outcome::Outcome;
use crate::retry::{RetryMode, RetryPolicy};
use crate::sink::Sink;
use crate::stats::Stats;
use crate::tracker::{StageFailure, Tracked};

/// When a sink's batch is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSettings {
    /// Write as soon as this many messages wait.
    pub max_size: NonZeroUsize,
    /// Write at the latest this long after the batch's first message arrived. Zero writes
    /// whenever the sink is idle, letting batches grow only while a write is under way.
    pub max_wait: Duration,
}

impl BatchSettings {
    /// The defaults for a pipeline: batches no larger than half the in-flight window of one
    /// partition (so two batches per partition can always fill) and at most 1,000, written as
    /// soon as the sink is idle: under load batches grow while the previous write is under
    /// way, and a lightly loaded pipeline never waits for a timer. Measured against a 5 ms
    /// wait: same throughput, RabbitMQ -> PostgreSQL p50 6.5 ms instead of 11.9 (BENCHMARKS.md).
    pub fn derived(max_in_flight: usize, partitions: usize) -> Self {
        let size = (max_in_flight / (2 * partitions.max(1))).clamp(1, 1000);
        BatchSettings {
            max_size: NonZeroUsize::new(size).expect("clamped to at least 1"),
            max_wait: Duration::ZERO,
        }
    }
}

/// One sink as the partitions see it.
#[derive(Clone)]
pub(crate) struct SinkSlot {
    pub name: Arc<str>,
    pub sink: Arc<dyn Sink>,
    pub batch: BatchSettings,
}

/// A partition's pending batch for one sink.
pub(crate) struct Lane {
    pub slot: SinkSlot,
    messages: Vec<Message>,
    tracked: Vec<Arc<Tracked>>,
    deadline: Option<Instant>,
    pub busy: bool,
}

/// A batch handed to the sink, with what it settled to.
pub(crate) struct Written {
    pub lane: usize,
    pub results: Vec<(Arc<Tracked>, Option<StageFailure>)>,
}

impl Lane {
    pub fn new(slot: SinkSlot) -> Self {
        Lane {
            slot,
            messages: Vec::new(),
            tracked: Vec::new(),
            deadline: None,
            busy: false,
        }
    }

    pub fn push(&mut self, msg: Message, tracked: Arc<Tracked>) {
        if self.messages.is_empty() {
            self.deadline = Some(Instant::now() + self.slot.batch.max_wait);
        }
        self.messages.push(msg);
        self.tracked.push(tracked);
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// The pending batch is full while a write is under way: the partition must stop reading.
    pub fn is_blocked(&self) -> bool {
        self.busy && self.messages.len() >= self.slot.batch.max_size.get()
    }

    /// When an idle lane's batch falls due, if it has one.
    pub fn due_at(&self) -> Option<Instant> {
        if self.busy { None } else { self.deadline }
    }

    /// Takes the next batch if the lane is idle and the batch is due (or `force`).
    pub fn take_due(
        &mut self,
        now: Instant,
        force: bool,
    ) -> Option<(Vec<Message>, Vec<Arc<Tracked>>)> {
        if self.busy || self.messages.is_empty() {
            return None;
        }
        let full = self.messages.len() >= self.slot.batch.max_size.get();
        let due = self.deadline.is_some_and(|d| d <= now);
        if !(full || due || force) {
            return None;
        }
        let n = self.messages.len().min(self.slot.batch.max_size.get());
        let (messages, tracked) = if n == self.messages.len() {
            self.deadline = None;
            (
                std::mem::take(&mut self.messages),
                std::mem::take(&mut self.tracked),
            )
        } else {
            let rest_m = self.messages.split_off(n);
            let rest_t = self.tracked.split_off(n);
            self.deadline = Some(now + self.slot.batch.max_wait);
            (
                std::mem::replace(&mut self.messages, rest_m),
                std::mem::replace(&mut self.tracked, rest_t),
            )
        };
        self.busy = true;
        Some((messages, tracked))
    }
}

/// Writes one batch, retrying transient failures in process (the partition's next batch for
/// this sink waits meanwhile), and reports each message's final result.
pub(crate) async fn write_batch(
    lane: usize,
    slot: SinkSlot,
    mut messages: Vec<Message>,
    mut tracked: Vec<Arc<Tracked>>,
    policy: RetryPolicy,
    stats: Arc<Stats>,
) -> Written {
    let mut results = Vec::with_capacity(tracked.len());
    let mut attempt: u32 = 1;
    let mut first_failure: Option<SystemTime> = None;
    loop {
        let started = std::time::Instant::now();
        let outcome = slot.sink.write(&messages).await;
        stats.record_batch(&slot.name, messages.len(), started.elapsed().as_secs_f64());
        let failed_at = SystemTime::now();
        let mut retry_m = Vec::new();
        let mut retry_t = Vec::new();
        for (i, (m, t)) in messages.into_iter().zip(tracked).enumerate() {
            let failure = match outcome.get(i) {
                Outcome::Ok => {
                    results.push((t, None));
                    continue;
                }
                Outcome::Permanent(f) => StageFailure {
                    retryable: false,
                    ..StageFailure::now(f, &*slot.name, attempt)
                },
                Outcome::Transient(f) => {
                    let in_process = policy.mode == RetryMode::InProcess;
                    if in_process && policy.may_retry(attempt) {
                        retry_m.push(m);
                        retry_t.push(t);
                        continue;
                    }
                    StageFailure {
                        retryable: true,
                        ..StageFailure::now(f, &*slot.name, attempt)
                    }
                }
            };
            let failure = StageFailure {
                first: first_failure.unwrap_or(failed_at),
                last: failed_at,
                ..failure
            };
            results.push((t, Some(failure)));
        }
        if retry_m.is_empty() {
            return Written { lane, results };
        }
        first_failure.get_or_insert(failed_at);
        stats.record_retry(&slot.name, retry_m.len());
        attempt += 1;
        let delay = policy.delay_before(attempt);
        tracing::warn!(
            sink = %slot.name,
            messages = retry_m.len(),
            attempt,
            delay_ms = delay.as_millis() as u64,
            error = %outcome_error(&outcome),
            "Sink write failed transiently; retrying"
        );
        tokio::time::sleep(delay).await;
        messages = retry_m;
        tracked = retry_t;
    }
}

fn outcome_error(outcome: &crate::sink::BatchOutcome) -> String {
    match outcome {
        crate::sink::BatchOutcome::Committed => String::new(),
        crate::sink::BatchOutcome::All(o) => o.failure().map(|f| f.to_string()).unwrap_or_default(),
        crate::sink::BatchOutcome::Each(v) => v
            .iter()
            .find_map(|o| o.failure().map(|f| f.to_string()))
            .unwrap_or_default(),
    }
}
