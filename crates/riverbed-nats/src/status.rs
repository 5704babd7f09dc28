//! Live counters of a source: acknowledgements sent, pull renewals, in-progress acks.

use std::sync::atomic::{AtomicU64, Ordering};

/// What a [`crate::NatsSource`] has done so far; shared, cheap to read.
#[derive(Debug, Default)]
pub struct SourceStatus {
    acked: AtomicU64,
    naked: AtomicU64,
    progress: AtomicU64,
    renewals: AtomicU64,
    skipped: AtomicU64,
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
