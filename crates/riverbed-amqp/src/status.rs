//! Live counters of a source, for status pages, tests and benchmarks.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

/// What a source has done so far. Every counter is also exported through `metrics`.
#[derive(Debug, Default)]
pub struct SourceStatus {
    sessions: AtomicU64,
    ack_frames: AtomicU64,
    acked: AtomicU64,
    nack_frames: AtomicU64,
    stale: AtomicU64,
    retried: AtomicU64,
    retry_failures: AtomicU64,
    queue: Mutex<String>,
    connected: AtomicBool,
    /// Why the source is not consuming now (the last connect error or the lost session's
    /// reason), URLs redacted.
    problem: Mutex<Option<String>>,
}

impl SourceStatus {
    /// Consuming sessions opened (1 after the first connection; each reconnect adds one).
    pub fn sessions(&self) -> u64 {
        self.sessions.load(Relaxed)
    }

    /// Reconnections after a lost connection, channel or consumer.
    pub fn reconnects(&self) -> u64 {
        self.sessions().saturating_sub(1)
    }

    /// `basic.ack` frames sent (each may acknowledge many deliveries).
    pub fn ack_frames(&self) -> u64 {
        self.ack_frames.load(Relaxed)
    }

    /// Deliveries acknowledged by those frames.
    pub fn acked(&self) -> u64 {
        self.acked.load(Relaxed)
    }

    /// `basic.nack` frames sent (requeues, failed retries).
    pub fn nack_frames(&self) -> u64 {
        self.nack_frames.load(Relaxed)
    }

    /// Settlements dropped because their channel had gone (the broker redelivers them).
    pub fn stale_settlements(&self) -> u64 {
        self.stale.load(Relaxed)
    }

    /// Messages published to a retry queue (then acknowledged).
    pub fn retried(&self) -> u64 {
        self.retried.load(Relaxed)
    }

    /// Retries the broker did not take on one attempt (the retry queue could not be declared,
    /// the copy was not confirmed); each is held and tried again later.
    pub fn retry_failures(&self) -> u64 {
        self.retry_failures.load(Relaxed)
    }

    /// The queue consumed now (for a server-named queue, the name of this session's queue).
    pub fn queue(&self) -> String {
        self.queue.lock().expect("status lock").clone()
    }

    /// `Ok` while a consuming session is open; otherwise why not (the last connection error,
    /// the reason the session was lost, or that none was opened yet). Credentials never show.
    pub fn connection(&self) -> Result<(), String> {
        if self.connected.load(Relaxed) {
            return Ok(());
        }
        Err(self
            .problem
            .lock()
            .expect("status lock")
            .clone()
            .unwrap_or_else(|| "not connected yet".to_owned()))
    }

    pub(crate) fn disconnected(&self, why: &str) {
        self.connected.store(false, Relaxed);
        *self.problem.lock().expect("status lock") = Some(riverbed_core::redact::urls_in(why));
    }

    pub(crate) fn session_opened(&self, queue: &str) {
        *self.queue.lock().expect("status lock") = queue.to_owned();
        *self.problem.lock().expect("status lock") = None;
        self.connected.store(true, Relaxed);
        if self.sessions.fetch_add(1, Relaxed) > 0 {
            metrics::counter!("riverbed_amqp_reconnects_total", "role" => "source").increment(1);
        }
    }

    pub(crate) fn record_ack(&self, deliveries: u64) {
        self.ack_frames.fetch_add(1, Relaxed);
        self.acked.fetch_add(deliveries, Relaxed);
        metrics::counter!("riverbed_amqp_ack_frames_total").increment(1);
    }

    pub(crate) fn record_nack(&self) {
        self.nack_frames.fetch_add(1, Relaxed);
        metrics::counter!("riverbed_amqp_nack_frames_total").increment(1);
    }

    pub(crate) fn record_stale(&self, n: u64) {
        self.stale.fetch_add(n, Relaxed);
        metrics::counter!("riverbed_amqp_stale_settlements_total").increment(n);
    }

    pub(crate) fn record_retried(&self, n: u64) {
        self.retried.fetch_add(n, Relaxed);
        metrics::counter!("riverbed_amqp_retries_published_total").increment(n);
    }

    pub(crate) fn record_retry_failures(&self, stage: &'static str, n: u64) {
        self.retry_failures.fetch_add(n, Relaxed);
        metrics::counter!("riverbed_amqp_retry_failures_total", "stage" => stage).increment(n);
    }
}
