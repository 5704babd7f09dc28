//! A partition's batch for one sink: fills on size or time, writes one batch at a time, retries.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::message::Message;
use crate::sink::Sink;
use crate::tracker::Tracked;

/// When a sink's batch is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSettings {
    /// Write as soon as this many messages wait.
    pub max_size: NonZeroUsize,
    /// Write at the latest this long after the batch's first message arrived. Zero writes
    /// whenever the sink is idle, letting batches grow only while a write is under way.
    pub max_wait: Duration,
    /// Write only the last message of each key in a batch (keyless messages are all written):
    /// a stream of snapshots becomes the latest snapshot per key per batch. The deliveries of
    /// the messages left out settle with the one written, after it was committed.
    pub coalesce: bool,
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
            coalesce: false,
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
