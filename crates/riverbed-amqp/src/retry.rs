//! Broker-side delayed retry: a failed message is republished, with confirms, to a TTL queue
//! that dead-letters it back to the consumed queue after the delay; the original delivery is
//! acknowledged only once the broker confirmed the copy.
//!
//! **Order**: while a message waits in a retry queue, later messages with the same key are
//! processed, so broker retry lets them overtake it. Use it for pipelines that do not need
//! per-key order; in-process retry (the core default) keeps order by making the partition wait.

use std::collections::BTreeMap;
use std::sync::Weak;
use std::time::{Duration, SystemTime};

use lapin::BasicProperties;
use lapin::types::{AMQPValue, ShortString};
use riverbed_core::Message;
use tokio::sync::mpsc;

use crate::acker::AckShared;
use crate::headers::{ATTEMPT_HEADER, to_table};
use crate::publisher::{Outgoing, Published, Publisher};
use crate::settings::RetrySpec;
use crate::topology::retry_queue;

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

/// Republishes retries until every sender is gone, reporting each result to the acker.
pub(crate) async fn run(
    mut jobs: mpsc::UnboundedReceiver<RetryJob>,
    publisher: Publisher,
    spec: RetrySpec,
    target: String,
    acker: Weak<AckShared>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while jobs.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let Some(acker) = acker.upgrade() else { return };
        let mut tiers: BTreeMap<String, Vec<RetryJob>> = BTreeMap::new();
        for job in batch.drain(..) {
            let q = retry_queue(&spec, &target, job.delay);
            if let Err(e) = publisher.ensure_queue(&q).await {
                tracing::error!(
                    queue = %q.name,
                    error = %e,
                    "Retry queue unavailable; requeueing the message"
                );
                acker.retry_done(job.generation, job.seq, false);
                continue;
            }
            tiers.entry(q.name).or_default().push(job);
        }
        for (queue, group) in tiers {
            publish(&publisher, &acker, &queue, group).await;
        }
    }
}

async fn publish(publisher: &Publisher, acker: &AckShared, queue: &str, group: Vec<RetryJob>) {
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
        Err(e) => {
            tracing::warn!(
                queue,
                error = %e,
                messages = group.len(),
                "Retry publish failed; requeueing"
            );
            vec![Published::Lost(e.to_string()); group.len()]
        }
    };
    let mut published = 0;
    for (job, result) in group.iter().zip(results) {
        let ok = result == Published::Confirmed;
        if ok {
            published += 1;
            tracing::debug!(
                queue,
                attempt = job.next_attempt,
                delay_ms = job.delay.as_millis() as u64,
                "Message sent to retry queue"
            );
        } else {
            if matches!(result, Published::Returned { .. }) {
                publisher.forget_declared();
            }
            tracing::warn!(queue, result = ?result, "Retry publish not confirmed; requeueing");
        }
        acker.retry_done(job.generation, job.seq, ok);
    }
    acker.status.record_retried(published);
}
