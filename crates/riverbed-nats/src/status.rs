//! Live counters of a source: acknowledgements sent, pull renewals, in-progress acks.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// What a [`crate::NatsSource`] has done so far; shared, cheap to read.
#[derive(Debug, Default)]
pub struct SourceStatus {
    acked: AtomicU64,
    naked: AtomicU64,
    progress: AtomicU64,
    renewals: AtomicU64,
    skipped: AtomicU64,
    pulling: AtomicBool,
    /// Why the source is not pulling now, URLs redacted.
    problem: Mutex<Option<String>>,
}

impl SourceStatus {
    /// Deliveries acknowledged (`+ACK`).
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// Deliveries given back (`-NAK`, with or without delay).
    pub fn naked(&self) -> u64 {
        self.naked.load(Ordering::Relaxed)
    }

    /// In-progress acknowledgements sent for deliveries unsettled past half of `ack_wait`.
    pub fn progress_acks(&self) -> u64 {
        self.progress.load(Ordering::Relaxed)
    }

    /// Times the pull was renewed (missed heartbeats, a lost consumer, a server restart).
    pub fn renewals(&self) -> u64 {
        self.renewals.load(Ordering::Relaxed)
    }

    /// Deliveries at or before the resume position, acknowledged without being handed over.
    pub fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }

    /// `Ok` while the source pulls from JetStream; otherwise why not (the last error, the
    /// reason the pull is being renewed, or that it has not started yet).
    pub fn connection(&self) -> Result<(), String> {
        if self.pulling.load(Ordering::Relaxed) {
            return Ok(());
        }
        Err(self
            .problem
            .lock()
            .expect("status lock")
            .clone()
            .unwrap_or_else(|| "not pulling yet".to_owned()))
    }

    pub(crate) fn set_pulling(&self) {
        *self.problem.lock().expect("status lock") = None;
        self.pulling.store(true, Ordering::Relaxed);
    }

    pub(crate) fn set_stopped(&self, why: &str) {
        self.pulling.store(false, Ordering::Relaxed);
        *self.problem.lock().expect("status lock") = Some(riverbed_core::redact::urls_in(why));
    }

    pub(crate) fn add_acked(&self, n: u64) {
        self.acked.fetch_add(n, Ordering::Relaxed);
        metrics::counter!("riverbed_nats_acked_total").increment(n);
    }

    pub(crate) fn add_naked(&self, n: u64) {
        self.naked.fetch_add(n, Ordering::Relaxed);
        metrics::counter!("riverbed_nats_naked_total").increment(n);
    }

    pub(crate) fn add_progress(&self, n: u64) {
        self.progress.fetch_add(n, Ordering::Relaxed);
        metrics::counter!("riverbed_nats_progress_acks_total").increment(n);
    }

    pub(crate) fn add_renewal(&self) {
        self.renewals.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("riverbed_nats_pull_renewals_total").increment(1);
    }

    pub(crate) fn add_skipped(&self) {
        self.skipped.fetch_add(1, Ordering::Relaxed);
    }
}
