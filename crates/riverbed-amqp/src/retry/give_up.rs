//! Giving up a broker retry that no retry queue takes: after `retry.hold_limit` the message
//! goes through the pipeline's dead-letter path (reason `retry_unavailable`: the configured
//! destination, logged and counted like every letter) and its delivery is acknowledged
//! once the letter is confirmed, so one refused retry queue cannot hold the channel's
//! acknowledgements, and with them the prefetch window, for good.

use std::time::{Duration, SystemTime};

use riverbed_core::{DeadLetter, FIRST_FAILURE_HEADER};
use tokio::time::Instant;

use super::{RetryJob, Worker};
use crate::acker::AckShared;

impl Worker {
    /// Stamps newly held retries, dead-letters those held past the limit, and returns the
    /// ones still held (all of them while no dead letter can be stored).
    pub(super) async fn give_up_overdue(
        &self,
        acker: &AckShared,
        mut failed: Vec<RetryJob>,
    ) -> Vec<RetryJob> {
        let now = Instant::now();
        for job in &mut failed {
            job.held_since.get_or_insert(now);
        }
        let Some(dead_letters) = &self.dead_letters else {
            return failed;
        };
        let (overdue, held): (Vec<RetryJob>, Vec<RetryJob>) = failed.into_iter().partition(|j| {
            j.held_since
                .is_some_and(|t| now.duration_since(t) >= self.hold_limit)
        });
        if overdue.is_empty() {
            return held;
        }
        let broker = self.last_error.as_deref().unwrap_or("not confirmed");
        let letters: Vec<DeadLetter> = overdue
            .iter()
            .map(|j| letter(j, broker, self.hold_limit))
            .collect();
        match dead_letters.store(&letters).await {
            Ok(()) => {
                acker
                    .status
                    .record_retry_failures("dead_lettered", overdue.len() as u64);
                tracing::error!(
                    messages = overdue.len(),
                    error = broker,
                    hold_limit_ms = self.hold_limit.as_millis() as u64,
                    "No retry queue took these messages in time; dead-lettered (retry_unavailable)"
                );
                for job in overdue {
                    acker.retry_done(job.generation, job.seq, true);
                }
                held
            }
            Err(e) => {
                tracing::warn!(error = %e, messages = overdue.len(), "Dead-lettering unretryable messages failed; still holding them");
                held.into_iter().chain(overdue).collect()
            }
        }
    }
}

/// The dead letter of a retry no queue took.
fn letter(job: &RetryJob, broker_error: &str, held: Duration) -> DeadLetter {
    let now = SystemTime::now();
    let first = job
        .message
        .headers
        .get(FIRST_FAILURE_HEADER)
        .and_then(|h| h.as_i64())
        .map(|ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64))
        .unwrap_or(now);
    DeadLetter {
        message: job.message.clone(),
        reason: "retry_unavailable".into(),
        error: format!(
            "{}: {} (then no retry queue took it for {} s: {broker_error})",
            job.failure.reason,
            job.failure.error,
            held.as_secs()
        ),
        attempts: job.next_attempt.saturating_sub(1).max(1),
        first_failure: first.min(now),
        last_failure: now,
        stage: "retry".into(),
    }
}
