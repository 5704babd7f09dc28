//! Broker-side delayed retry: a failed message is republished, with confirms, to a TTL queue
//! that dead-letters it back to the consumed queue after the delay; the original delivery is
//! acknowledged only once the broker confirmed the copy. While the broker does not take
//! retries, they are held and tried again with backoff (see [`run`]).
//!
//! A retry the broker has not taken for `retry.hold_limit` goes to the pipeline's dead-letter
//! destination with reason `retry_unavailable` instead (see [`give_up`]): a held delivery keeps its place in
//! the channel's acknowledgement order, and cumulative acks cannot pass it.
//!
//! **Order**: while a message waits in a retry queue, later messages with the same key are
//! processed, so broker retry lets them overtake it. Use it for pipelines that do not need
//! per-key order; in-process retry (the core default) keeps order by making the partition wait.

use std::collections::BTreeMap;
use std::sync::Weak;
use std::time::{Duration, SystemTime};

use lapin::BasicProperties;
use lapin::types::{AMQPValue, ShortString};
use riverbed_core::{Backoff, DeadLetterRoute, Failure, Message};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::acker::AckShared;
use crate::headers::{ATTEMPT_HEADER, to_table};
use crate::publisher::{Outgoing, Published, Publisher};
use crate::settings::{QueueSpec, RetrySpec};
use crate::topology::retry_queue;

mod give_up;

/// Most retries republished in one batch.
const MAX_BATCH: usize = 256;

/// A delivery to republish for a later attempt.
#[derive(Debug)]
pub(crate) struct RetryJob {
    pub generation: u32,
    pub seq: u64,
    pub message: Message,
    pub next_attempt: u32,
    pub delay: Duration,
    /// What failed, for the dead letter if no retry queue ever takes the message.
    pub failure: Failure,
    /// Since when the broker has not taken this retry.
    pub held_since: Option<Instant>,
}

/// The properties of a retried copy: persistent, expiring after `delay`, with its attempt.
fn properties(job: &RetryJob) -> BasicProperties {
    let m = &job.message;
    let mut headers = to_table(&m.headers);
    headers.insert(
        ATTEMPT_HEADER.into(),
        AMQPValue::LongLongInt(job.next_attempt.into()),
    );
    let ttl = job.delay.as_millis().max(1).to_string();
    let mut p = BasicProperties::default()
        .with_delivery_mode(2)
        .with_expiration(ttl.into())
        .with_headers(headers);
    if let Some(id) = m
        .meta
        .message_id
        .as_deref()
        .and_then(|i| ShortString::try_new(i).ok())
    {
        p = p.with_message_id(id);
    }
    if let Some(secs) = m
        .meta
        .timestamp
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
    {
        p = p.with_timestamp(secs.as_secs());
    }
    p
}

/// Declares the retry queues and publishes retries to them.
pub(crate) struct Worker {
    pub publisher: Publisher,
    pub spec: RetrySpec,
    /// The consumed queue, where retries return.
    pub target: String,
    /// Paces attempts while the broker does not take retries.
    pub backoff: Backoff,
    /// Where a retry goes that the broker has not taken for `hold_limit`: the pipeline's
    /// dead-letter path.
    pub dead_letters: Option<DeadLetterRoute>,
    /// How long a retry may be held before it is dead-lettered instead.
    pub hold_limit: Duration,
    /// The broker's last refusal, for the dead letters.
    pub last_error: Option<String>,
}

/// Republishes retries until every sender is gone, reporting each result to the acker.
///
/// A retry the broker does not take (its retry queue cannot be declared, the copy is not
/// confirmed) is held and tried again after a jittered, growing delay, together with every
/// retry that arrives meanwhile. Its delivery stays unacknowledged and keeps its prefetch slot:
/// while the broker cannot take retries the source slows down, instead of requeueing the
/// message into a redelivery loop that never reaches its last attempt. A held retry whose
/// channel has gone is dropped (the broker redelivers the message); once the source closes,
/// a retry that fails is requeued at once.
pub(crate) async fn run(
    mut jobs: mpsc::UnboundedReceiver<RetryJob>,
    mut worker: Worker,
    acker: Weak<AckShared>,
    mut closing: watch::Receiver<bool>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut held: Vec<RetryJob> = Vec::new();
    let mut retry_at = Instant::now();
    loop {
        if held.is_empty() {
            if jobs.recv_many(&mut batch, MAX_BATCH).await == 0 {
                return;
            }
        } else {
            tokio::select! {
                n = jobs.recv_many(&mut held, MAX_BATCH) => {
                    if n == 0 {
                        return;
                    }
                    continue;
                }
                () = tokio::time::sleep_until(retry_at) => {}
                _ = closing.wait_for(|c| *c) => {}
            }
            batch.append(&mut held);
        }
        let Some(acker) = acker.upgrade() else { return };
        let failed = worker.attempt(&acker, std::mem::take(&mut batch)).await;
        let failed = worker.give_up_overdue(&acker, failed).await;
        if failed.is_empty() {
            worker.backoff.reset();
        } else if *closing.borrow() {
            for job in failed {
                acker.retry_done(job.generation, job.seq, false);
            }
        } else {
            let delay = worker.backoff.next_delay();
            retry_at = Instant::now() + delay;
            tracing::warn!(
                messages = failed.len(),
                retry_in_ms = delay.as_millis() as u64,
                "Retries held until the broker takes them"
            );
            held = failed;
        }
    }
}

impl Worker {
    /// Declares the retry queues and publishes `jobs` to them. Returns the retries the broker
    /// did not take and whose deliveries are still live.
    async fn attempt(&mut self, acker: &AckShared, jobs: Vec<RetryJob>) -> Vec<RetryJob> {
        let mut tiers: BTreeMap<String, (QueueSpec, Vec<RetryJob>)> = BTreeMap::new();
        for job in jobs {
            if !acker.is_live(job.generation) {
                // Its channel has gone: the broker redelivers the message.
                acker.retry_done(job.generation, job.seq, false);
                continue;
            }
            let q = retry_queue(&self.spec, &self.target, job.delay);
            tiers
                .entry(q.name.clone())
                .or_insert_with(|| (q, Vec::new()))
                .1
                .push(job);
        }
        let mut failed = Vec::new();
        for (name, (queue, group)) in tiers {
            match self.publisher.ensure_queue(&queue).await {
                Ok(()) => {
                    let (not_published, error) =
                        publish(&self.publisher, acker, &name, group).await;
                    failed.extend(not_published);
                    self.last_error = error.or(self.last_error.take());
                }
                Err(e) => {
                    let error = e.to_string();
                    not_taken(acker, "declare", &name, &error, group.len());
                    self.last_error = Some(error);
                    failed.extend(group);
                }
            }
        }
        failed
    }
}

/// Logs and counts retries the broker did not take.
fn not_taken(acker: &AckShared, stage: &'static str, queue: &str, error: &str, messages: usize) {
    acker.status.record_retry_failures(stage, messages as u64);
    if error.contains("PRECONDITION_FAILED") {
        tracing::error!(
            queue,
            stage,
            error,
            messages,
            "Retry queue exists with other arguments (made with another `retry.queue_type`?): \
             delete it once empty or set `retry.queue_type` to match; holding the messages"
        );
    } else {
        tracing::warn!(
            queue,
            stage,
            error,
            messages,
            "Retry not taken by the broker; holding the messages"
        );
    }
}

/// Publishes `group` to `queue`; returns the retries that were not confirmed, and why.
async fn publish(
    publisher: &Publisher,
    acker: &AckShared,
    queue: &str,
    group: Vec<RetryJob>,
) -> (Vec<RetryJob>, Option<String>) {
    let routing_key = ShortString::from(queue);
    let outgoing: Vec<Outgoing> = group
        .iter()
        .map(|job| Outgoing {
            exchange: ShortString::default(),
            routing_key: routing_key.clone(),
            payload: job.message.payload.clone(),
            properties: properties(job),
        })
        .collect();
    let results = match publisher.publish(&outgoing, true).await {
        Ok(r) => r,
        Err(e) => vec![Published::Lost(e.to_string()); group.len()],
    };
    let (mut published, mut failed, mut last_error) = (0, Vec::new(), None);
    for (job, result) in group.into_iter().zip(results) {
        match result {
            Published::Confirmed => {
                published += 1;
                tracing::debug!(
                    queue,
                    attempt = job.next_attempt,
                    delay_ms = job.delay.as_millis() as u64,
                    "Message sent to retry queue"
                );
                acker.retry_done(job.generation, job.seq, true);
            }
            other => {
                if matches!(other, Published::Returned { .. }) {
                    // The retry queue went away: declare it again next time.
                    publisher.forget_declared();
                }
                last_error = Some(format!("{other:?}"));
                failed.push(job);
            }
        }
    }
    acker.status.record_retried(published);
    if let Some(error) = &last_error {
        not_taken(acker, "publish", queue, error, failed.len());
    }
    (failed, last_error)
}
