//! Dead letters: the destination trait and the task that writes letters before acking them.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::outcome::{DeadLetter, Failure, Settlement};
use crate::retry::Backoff;
use crate::source::{Acker, Settled};
use crate::stats::Stats;
use crate::storm::StormWatch;
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

/// The runtime's one way to store dead letters: the pipeline's destination, then the log line
/// and the count of each letter. The runtime stores its own letters through it, and hands it
/// to the source ([`crate::Source::route_dead_letters`]) for the letters a source makes itself
/// (a broker retry it gives up), so every letter goes the same way.
#[derive(Clone)]
pub struct DeadLetterRoute {
    sink: Arc<dyn DeadLetterSink>,
    stats: Arc<Stats>,
    storm: Option<Arc<StormWatch>>,
}

impl DeadLetterRoute {
    /// A route to `sink`, counting into `stats`.
    pub fn new(sink: Arc<dyn DeadLetterSink>, stats: Arc<Stats>) -> Self {
        DeadLetterRoute {
            sink,
            stats,
            storm: None,
        }
    }

    /// Counts every stored letter into the storm guard too.
    pub(crate) fn with_storm(mut self, storm: Option<Arc<StormWatch>>) -> Self {
        self.storm = storm;
        self
    }

    /// The destination, for logs.
    pub fn describe(&self) -> String {
        self.sink.describe()
    }

    /// Stores `letters` once; when they are stored, logs and counts each. A failure is logged
    /// and counted, and returned for the caller to retry (the originals stay unsettled).
    pub async fn store(&self, letters: &[DeadLetter]) -> Result<(), Failure> {
        if let Err(e) = self.sink.write(letters).await {
            self.stats.record_dead_letter_failure();
            tracing::error!(
                destination = %self.sink.describe(),
                error = %e,
                letters = letters.len(),
                "Dead-letter write failed; originals stay unacknowledged"
            );
            return Err(e);
        }
        for letter in letters {
            tracing::warn!(
                reason = %letter.reason,
                error = %letter.error,
                attempts = letter.attempts,
                stage = %letter.stage,
                key = letter.message.key.as_deref().unwrap_or(""),
                "Message dead-lettered"
            );
        }
        self.stats.record_dead_lettered(letters);
        if let Some(storm) = &self.storm {
            storm.record_dead_letters(letters.len());
        }
        Ok(())
    }
}

/// Letters are written in groups of at most this many.
const MAX_GROUP: usize = 256;

/// Receives dead-lettered deliveries, writes them, then acknowledges the originals. Once the
/// storm guard tripped (or would trip within a group), the letters beyond it are not stored:
/// their deliveries are given back to the source, to be processed again after the fix.
pub(crate) async fn run_dead_letters(
    mut rx: mpsc::UnboundedReceiver<Arc<Tracked>>,
    route: DeadLetterRoute,
    acker: Arc<dyn Acker>,
) {
    let mut group: Vec<Arc<Tracked>> = Vec::new();
    while rx.recv_many(&mut group, MAX_GROUP).await > 0 {
        let allowed = route
            .storm
            .as_ref()
            .map_or(group.len(), |s| s.letters_allowed(group.len()));
        let (stored, given_back) = group.split_at(allowed);
        if !stored.is_empty() {
            let letters: Vec<DeadLetter> = stored.iter().map(|t| t.dead_letter()).collect();
            let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
            while route.store(&letters).await.is_err() {
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
        if !given_back.is_empty() {
            tracing::warn!(
                deliveries = given_back.len(),
                "Dead-letter storm: failed deliveries given back to the source instead of dead-lettered"
            );
        }
        let settle = |t: &Arc<Tracked>, settlement| Settled {
            token: t.token(),
            settlement,
            message: None,
        };
        let settled = stored
            .iter()
            .map(|t| settle(t, Settlement::Ack))
            .chain(given_back.iter().map(|t| settle(t, Settlement::Requeue)))
            .collect();
        acker.settle(settled);
        group.clear();
    }
}
