//! Writing one batch to a sink: in-process retries of transient failures, waiting out an
//! unreachable destination without using up attempts, and panics caught per message.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::SystemTime;

use futures::FutureExt;

use crate::availability::{Availability, MAX_OUTAGE_WAIT, Outage};
use crate::lane::SinkSlot;
use crate::message::Message;
use crate::outcome::{Failure, Outcome};
use crate::retry::{Backoff, RetryMode, RetryPolicy};
use crate::sink::BatchOutcome;
use crate::stats::Stats;
use crate::tracker::{StageFailure, Tracked};

/// A batch handed to the sink, with what it settled to.
pub(crate) struct Written {
    pub lane: usize,
    pub results: Vec<(Arc<Tracked>, Option<StageFailure>)>,
}

/// What the runtime shares with every write.
#[derive(Clone)]
pub(crate) struct WriteContext {
    pub policy: RetryPolicy,
    pub stats: Arc<Stats>,
    pub availability: Arc<Availability>,
}

/// A message of the batch that is still to be committed.
struct Pending {
    tracked: Arc<Tracked>,
    /// The deliveries of messages a coalescing batch left out for this one: they settle with it.
    riders: Vec<Arc<Tracked>>,
    /// Attempts used so far (only failures that belong to the message count).
    attempts: u32,
    first_failure: Option<SystemTime>,
}

/// Writes one batch until every message is committed or has failed for good, and reports each
/// message's final result. The partition's next batch for this sink waits meanwhile, so per-key
/// order survives retries. A transient failure uses up one attempt of its message; an
/// unreachable destination uses up none: the write waits with capped backoff (and the intake
/// pauses) until the destination answers again.
pub(crate) async fn write_batch(
    (partition, lane): (usize, usize),
    slot: SinkSlot,
    messages: Vec<Message>,
    tracked: Vec<Arc<Tracked>>,
    cx: WriteContext,
) -> Written {
    let policy = cx.policy;
    let mut results = Vec::with_capacity(tracked.len());
    let (mut messages, mut pending) = if slot.batch.coalesce {
        coalesce(messages, tracked)
    } else {
        let pending = tracked.into_iter().map(Pending::new).collect();
        (messages, pending)
    };
    let mut outage: Option<Outage> = None;
    let mut outage_backoff = Backoff::new(policy.initial_backoff, MAX_OUTAGE_WAIT);
    loop {
        let started = std::time::Instant::now();
        let outcome = write_guarded(&slot, &messages).await;
        cx.stats.record_batch(
            &slot.name,
            partition,
            messages.len(),
            started.elapsed().as_secs_f64(),
        );
        let failed_at = SystemTime::now();
        let unavailable = outcome.any_unavailable();
        let mut retry_m = Vec::new();
        let mut retry_p = Vec::new();
        for (i, (m, mut p)) in messages.into_iter().zip(pending).enumerate() {
            let (failure, retryable) = match outcome.get(i) {
                Outcome::Ok => {
                    p.settle(&mut results, None);
                    continue;
                }
                Outcome::Unavailable(_) => {
                    retry_m.push(m);
                    retry_p.push(p);
                    continue;
                }
                Outcome::Permanent(f) => {
                    p.attempts += 1;
                    (f, false)
                }
                Outcome::Transient(f) => {
                    p.attempts += 1;
                    p.first_failure.get_or_insert(failed_at);
                    let in_process = policy.mode == RetryMode::InProcess;
                    if in_process && policy.may_retry(p.attempts) {
                        retry_m.push(m);
                        retry_p.push(p);
                        continue;
                    }
                    (f, true)
                }
            };
            let failure = StageFailure {
                retryable,
                first: p.first_failure.unwrap_or(failed_at),
                last: failed_at,
                ..StageFailure::now(failure, &*slot.name, p.attempts)
            };
            p.settle(&mut results, Some(failure));
        }
        if !unavailable {
            // The destination answered: whatever outage this write waited out is over.
            outage = None;
            outage_backoff.reset();
        }
        if retry_m.is_empty() {
            return Written { lane, results };
        }
        let error = first_error(&outcome);
        let delay = if unavailable {
            match outage.as_mut() {
                Some(o) => o.still_down(&error),
                None => outage = Some(cx.availability.enter(&slot.name, &error)),
            }
            cx.stats.record_unavailable_wait(&slot.name, retry_m.len());
            outage_backoff.next_delay()
        } else {
            cx.stats.record_retry(&slot.name, retry_m.len());
            let attempt = retry_p.iter().map(|p| p.attempts).max().unwrap_or(1) + 1;
            let delay = policy.delay_before(attempt);
            tracing::warn!(
                sink = %slot.name,
                messages = retry_m.len(),
                attempt,
                delay_ms = delay.as_millis() as u64,
                error = %error,
                "Sink write failed transiently; retrying"
            );
            delay
        };
        tokio::time::sleep(delay).await;
        messages = retry_m;
        pending = retry_p;
    }
}

impl Pending {
    fn new(tracked: Arc<Tracked>) -> Self {
        Pending {
            tracked,
            riders: Vec::new(),
            attempts: 0,
            first_failure: None,
        }
    }

    /// Reports the message's final result, for it and for every delivery riding on it.
    fn settle(
        self,
        results: &mut Vec<(Arc<Tracked>, Option<StageFailure>)>,
        failure: Option<StageFailure>,
    ) {
        for r in self.riders {
            results.push((r, failure.clone()));
        }
        results.push((self.tracked, failure));
    }
}

/// Keeps the last message of each key, in batch order (keyless messages all stay); the
/// deliveries of the messages left out ride on the one kept for their key.
fn coalesce(messages: Vec<Message>, tracked: Vec<Arc<Tracked>>) -> (Vec<Message>, Vec<Pending>) {
    let mut last: HashMap<&str, usize> = HashMap::new();
    for (i, m) in messages.iter().enumerate() {
        if let Some(k) = &m.key {
            last.insert(k.as_str(), i);
        }
    }
    let keep: Vec<usize> = messages
        .iter()
        .enumerate()
        .map(|(i, m)| m.key.as_deref().map_or(i, |k| last[k]))
        .collect();
    drop(last);
    let mut pending: Vec<Option<Pending>> = Vec::with_capacity(messages.len());
    pending.resize_with(messages.len(), || None);
    // Backwards: the message kept for a key comes at or after every message it replaces.
    for (i, t) in tracked.into_iter().enumerate().rev() {
        if keep[i] == i {
            pending[i] = Some(Pending::new(t));
        } else {
            let kept = pending[keep[i]]
                .as_mut()
                .expect("a later message, visited already");
            kept.riders.push(t);
        }
    }
    let mut kept_messages = Vec::with_capacity(pending.len());
    let mut kept_pending = Vec::with_capacity(pending.len());
    for (m, p) in messages.into_iter().zip(pending) {
        if let Some(p) = p {
            kept_messages.push(m);
            kept_pending.push(p);
        }
    }
    (kept_messages, kept_pending)
}

/// The sink's write, with a panic caught: the batch is written again one message at a time so
/// that only the message that panics fails (for good, reason `panic`). After a message that
/// fails for now, the rest are not written (they would overtake it).
async fn write_guarded(slot: &SinkSlot, messages: &[Message]) -> BatchOutcome {
    let panic = match AssertUnwindSafe(slot.sink.write(messages))
        .catch_unwind()
        .await
    {
        Ok(outcome) => return outcome,
        Err(panic) => panic_text(&*panic),
    };
    tracing::error!(sink = %slot.name, messages = messages.len(), panic = %panic, "Sink panicked while writing a batch; writing it one message at a time");
    if messages.len() == 1 {
        return BatchOutcome::permanent(Failure::new("panic", panic));
    }
    let mut outcomes = Vec::with_capacity(messages.len());
    for m in messages {
        let held_back = outcomes
            .last()
            .filter(|o| matches!(o, Outcome::Transient(_) | Outcome::Unavailable(_)))
            .cloned();
        if let Some(o) = held_back {
            outcomes.push(o);
            continue;
        }
        let one = match AssertUnwindSafe(slot.sink.write(std::slice::from_ref(m)))
            .catch_unwind()
            .await
        {
            Ok(o) => o.get(0),
            Err(panic) => Outcome::Permanent(Failure::new("panic", panic_text(&*panic))),
        };
        outcomes.push(one);
    }
    BatchOutcome::Each(outcomes)
}

/// The text of a caught panic.
pub(crate) fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic with a non-text payload".to_owned())
}

fn first_error(outcome: &BatchOutcome) -> String {
    match outcome {
        BatchOutcome::Committed => String::new(),
        BatchOutcome::All(o) => o.failure().map(|f| f.to_string()).unwrap_or_default(),
        BatchOutcome::Each(v) => v
            .iter()
            .find_map(|o| o.failure().map(|f| f.to_string()))
            .unwrap_or_default(),
    }
}
