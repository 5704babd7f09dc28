//! The intake: takes in-flight permits, receives deliveries, keys them and hands them to their
//! partitions in chunks.

use std::sync::Arc;

use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::key::{KeySpec, partition_of};
use crate::message::Message;
use crate::outcome::Failure;
use crate::partition::{Item, Shared};
use crate::source::{Delivery, Source, SourceError};
use crate::stop::Stop;
use crate::tracker::{StageFailure, Tracked};
use crate::write::panic_text;

/// Deliveries asked of the source at once.
pub(crate) const RECV_CHUNK: usize = 256;

/// How the intake ended.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct IntakeEnd {
    /// The source ran dry by itself.
    pub exhausted: bool,
    /// Deliveries received but never handed to a partition: a partition could not take them
    /// before the grace period ran out. They are unsettled, so the source gives them again.
    pub abandoned: usize,
}

/// The intake loop's state.
pub(crate) struct Intake {
    pub key: KeySpec,
    pub max_in_flight: usize,
    /// Deliveries of one message before it is dead-lettered unprocessed.
    pub max_deliveries: u32,
    pub inputs: Vec<mpsc::Sender<Vec<Item>>>,
    pub permits: Arc<Semaphore>,
    pub shared: Arc<Shared>,
    pub next_unkeyed: usize,
    pub abandoned: usize,
}

impl Intake {
    /// Runs until the source is exhausted or a stop is requested.
    pub async fn run(
        mut self,
        source: &mut dyn Source,
        stop: &Stop,
    ) -> Result<IntakeEnd, SourceError> {
        let mut buf = Vec::with_capacity(RECV_CHUNK);
        let mut chunks: Vec<Vec<Item>> = (0..self.inputs.len()).map(|_| Vec::new()).collect();
        // Under backpressure few permits are free at a time; asking the source for one or two
        // messages per call would make every call a round trip. Wait for a useful chunk.
        let min_chunk = (self.max_in_flight / 8).clamp(1, RECV_CHUNK / 4);
        let exhausted = loop {
            if self.shared.availability.any_down() {
                // A destination cannot be reached: take nothing more from the source (the
                // broker keeps the backlog) until every waiting write got through.
                tokio::select! {
                    biased;
                    _ = stop.requested() => break false,
                    _ = self.shared.availability.all_up() => {}
                }
            }
            let want = self
                .permits
                .available_permits()
                .clamp(min_chunk, RECV_CHUNK);
            let permits = tokio::select! {
                biased;
                _ = stop.requested() => break false,
                p = self.permits.clone().acquire_many_owned(want as u32) => p.expect("the semaphore is never closed"),
            };
            let more = tokio::select! {
                biased;
                _ = stop.requested() => break false,
                r = source.recv(&mut buf, want) => r?,
            };
            self.shared.stats.record_received(buf.len());
            let mut permits = permits;
            for d in buf.drain(..) {
                let permit = permits.split(1).expect("one permit per received delivery");
                self.route(d, permit, &mut chunks);
            }
            drop(permits);
            for (i, chunk) in chunks.iter_mut().enumerate() {
                if !chunk.is_empty() {
                    self.hand_over(i, std::mem::take(chunk), stop).await?;
                }
            }
            if !more {
                break true;
            }
        };
        Ok(IntakeEnd {
            exhausted,
            abandoned: self.abandoned,
        })
    }

    /// Hands a chunk to partition `i`. A partition whose sink is stuck stops reading: after a
    /// stop request the intake waits for it only until the grace period is over, then drops
    /// the chunk unsettled (the source gives those deliveries again).
    async fn hand_over(
        &mut self,
        i: usize,
        chunk: Vec<Item>,
        stop: &Stop,
    ) -> Result<(), SourceError> {
        let closed = || SourceError::Fatal("a partition stopped unexpectedly".into());
        let chunk = match self.inputs[i].try_send(chunk) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Closed(_)) => return Err(closed()),
            Err(TrySendError::Full(chunk)) => chunk,
        };
        let input = &self.inputs[i];
        let slot = tokio::select! {
            r = input.reserve() => Some(r),
            _ = stop.grace_over() => None,
        };
        match slot {
            Some(Ok(slot)) => {
                slot.send(chunk);
                Ok(())
            }
            Some(Err(_)) => Err(closed()),
            None => {
                tracing::warn!(
                    partition = i,
                    deliveries = chunk.len(),
                    "Grace period over before a busy partition took its deliveries; they are left to redelivery"
                );
                self.abandoned += chunk.len();
                Ok(())
            }
        }
    }

    /// The failure of a message delivered too often: poison-pill protection.
    fn over_limit(&self, m: &Message) -> Failure {
        Failure::new(
            "delivery_limit",
            format!(
                "delivered {} times without being settled (max_deliveries = {})",
                m.meta.deliveries, self.max_deliveries
            ),
        )
    }

    fn route(&mut self, d: Delivery, permit: OwnedSemaphorePermit, chunks: &mut [Vec<Item>]) {
        let Delivery { mut message, token } = d;
        let keyed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.key.apply(&mut message)
        }))
        .unwrap_or_else(|panic| Err(crate::Failure::new("panic", panic_text(&*panic))));
        // Tracked after keying, so a dead letter carries the key its message was routed by.
        let tracked = Arc::new(Tracked::new(token, &message, Some(permit)));
        let refused = if message.meta.deliveries > self.max_deliveries {
            Some((self.over_limit(&message), "intake"))
        } else {
            keyed.err().map(|f| (f, "key"))
        };
        if let Some((f, stage)) = refused {
            let attempts = message.meta.attempt.max(message.meta.deliveries);
            tracked.fail(StageFailure::now(f, stage, attempts));
            let _ = self.shared.dead_letters.send(tracked);
            return;
        }
        let n = chunks.len();
        let p = match &message.key {
            Some(k) => partition_of(k, n),
            None => {
                self.next_unkeyed = (self.next_unkeyed + 1) % n;
                self.next_unkeyed
            }
        };
        message.meta.partition = p as u32;
        chunks[p].push((tracked, message));
    }
}
