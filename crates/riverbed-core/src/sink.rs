//! Where messages go: the `Sink` trait and what a batch write returns.

use async_trait::async_trait;

use crate::message::Message;
use crate::outcome::{Failure, Outcome};

/// The result of writing one batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOutcome {
    /// Every message of the batch is committed.
    Committed,
    /// The whole batch shares this outcome (a rolled-back transaction, a lost connection).
    All(Outcome),
    /// One outcome per message, in batch order (a batch split to isolate a bad row).
    Each(Vec<Outcome>),
}

impl BatchOutcome {
    /// The whole batch failed transiently.
    pub fn transient(f: Failure) -> Self {
        BatchOutcome::All(Outcome::Transient(f))
    }

    /// The destination cannot be reached: nothing of the batch is committed, and no message's
    /// attempts are used up (the partition waits, the intake pauses).
    pub fn unavailable(f: Failure) -> Self {
        BatchOutcome::All(Outcome::Unavailable(f))
    }

    /// True when any message of the batch met an unreachable destination.
    pub fn any_unavailable(&self) -> bool {
        match self {
            BatchOutcome::Committed => false,
            BatchOutcome::All(o) => matches!(o, Outcome::Unavailable(_)),
            BatchOutcome::Each(v) => v.iter().any(|o| matches!(o, Outcome::Unavailable(_))),
        }
    }

    /// The whole batch failed for good.
    pub fn permanent(f: Failure) -> Self {
        BatchOutcome::All(Outcome::Permanent(f))
    }

    /// The outcome of message `i`.
    pub fn get(&self, i: usize) -> Outcome {
        match self {
            BatchOutcome::Committed => Outcome::Ok,
            BatchOutcome::All(o) => o.clone(),
            BatchOutcome::Each(v) => v.get(i).cloned().unwrap_or_else(|| {
                Outcome::Permanent(Failure::new(
                    "sink_contract",
                    format!("sink returned {} outcomes for a larger batch", v.len()),
                ))
            }),
        }
    }
}

/// A destination that commits batches of messages.
///
/// The runtime hands each partition's messages to a sink in delivery order and never starts a
/// partition's next batch before the previous one has settled. A sink keeps per-key order by
/// honouring one rule: when it reports a message as [`Outcome::Transient`], it has not committed
/// any later message of the same key from that batch (a transaction that rolls back as a whole
/// does this naturally). Permanent per-message failures may be isolated freely.
///
/// A sink only classifies its errors: [`Outcome::Unavailable`] when the destination cannot be
/// reached (the runtime then waits with capped backoff and pauses the intake, without using up
/// attempts), [`Outcome::Transient`] when the message may succeed later, [`Outcome::Permanent`]
/// when it never will. A panic inside `write` is caught: the batch is written again one message
/// at a time, and the message that panics is dead-lettered with reason `panic`.
#[async_trait]
pub trait Sink: Send + Sync + 'static {
    /// Writes one batch and reports what was committed.
    async fn write(&self, batch: &[Message]) -> BatchOutcome;

    /// Flushes anything buffered; called once when the pipeline stops.
    async fn close(&self) -> Result<(), Failure> {
        Ok(())
    }
}

/// A sink that commits everything instantly: for benchmarks of the runtime itself.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoopSink;

#[async_trait]
impl Sink for NoopSink {
    async fn write(&self, _batch: &[Message]) -> BatchOutcome {
        BatchOutcome::Committed
    }
}
