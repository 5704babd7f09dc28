//! Dead letters: the destination trait and the task that writes letters before acking them.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::outcome::{DeadLetter, Failure, Settlement};
use crate::retry::Backoff;
use crate::source::{Acker, Settled};
use crate::stats::Stats;
use crate::tracker::Tracked;

/// Where messages that cannot be processed are kept, with their reason, for inspection and
/// redrive. The original delivery is acknowledged only after `write` returned `Ok`.
#[async_trait]
pub trait DeadLetterSink: Send + Sync + 'static {
    /// A short description for logs ("dead_letters table in riverbed.db").
    fn describe(&self) -> String;

    /// Stores the letters durably. An error is retried with backoff until it succeeds or the
    /// pipeline stops (in which case the originals are redelivered later, never lost).
    async fn write(&self, letters: &[DeadLetter]) -> Result<(), Failure>;
}

/// Letters are written in groups of at most this many.
const MAX_GROUP: usize = 256;

/// Receives dead-lettered deliveries, writes them, then acknowledges the originals.
pub(crate) async fn run_dead_letters(
    mut rx: mpsc::UnboundedReceiver<Arc<Tracked>>,
    sink: Arc<dyn DeadLetterSink>,
    acker: Arc<dyn Acker>,
    stats: Arc<Stats>,
) {
    let mut group: Vec<Arc<Tracked>> = Vec::new();
    while rx.recv_many(&mut group, MAX_GROUP).await > 0 {
        let letters: Vec<DeadLetter> = group.iter().map(|t| t.dead_letter()).collect();
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
        loop {
            match sink.write(&letters).await {
                Ok(()) => break,
                Err(e) => {
                    stats.record_dead_letter_failure();
                    let delay = backoff.next_delay();
                    tracing::error!(
                        destination = %sink.describe(),
                        error = %e,
                        letters = letters.len(),
                        retry_in_ms = delay.as_millis() as u64,
                        "Dead-letter write failed; originals stay unacknowledged"
                    );
                    tokio::time::sleep(delay).await;
                }
            }
        }
        for letter in &letters {
            tracing::warn!(
                reason = %letter.reason,
                error = %letter.error,
                attempts = letter.attempts,
                stage = %letter.stage,
                key = letter.message.key.as_deref().unwrap_or(""),
                "Message dead-lettered"
            );
        }
        stats.record_dead_lettered(&letters);
        let settled = group
            .iter()
            .map(|t| Settled {
                token: t.token(),
                settlement: Settlement::Ack,
                message: None,
            })
            .collect();
        acker.settle(settled);
        group.clear();
    }
}
