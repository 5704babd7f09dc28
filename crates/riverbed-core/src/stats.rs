//! Pipeline counters: cheap atomics for progress lines, mirrored into `metrics` for Prometheus.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use metrics::{counter, gauge};

use crate::outcome::DeadLetter;

/// Live counters of one pipeline. Shared; read with [`Stats::snapshot`].
#[derive(Debug, Default)]
pub struct Stats {
    received: AtomicU64,
    acked: AtomicU64,
    filtered: AtomicU64,
    dead_lettered: AtomicU64,
    retried: AtomicU64,
    unavailable_waits: AtomicU64,
    broker_retried: AtomicU64,
    dead_letter_write_failures: AtomicU64,
    batches: AtomicU64,
    /// Batch write times by sink, then partition, since the last [`Stats::take_write_times`]
    /// (by sink first, so a write finds its entry by the sink's `&str` without allocating).
    write_times: Mutex<BTreeMap<String, BTreeMap<usize, WriteTimes>>>,
}

/// The batch writes of one sink in one partition (one batcher) over a period.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteTimes {
    /// The sink's name.
    pub sink: String,
    /// The partition (0-based).
    pub partition: usize,
    /// Batch writes (each retry of a batch is one more).
    pub batches: u64,
    /// Messages handed to the sink in those writes (after coalescing).
    pub messages: u64,
    /// The shortest write, in seconds.
    pub min_seconds: f64,
    /// The longest write, in seconds.
    pub max_seconds: f64,
    /// All writes together, in seconds.
    pub total_seconds: f64,
}

impl WriteTimes {
    /// The mean write time, in seconds.
    pub fn mean_seconds(&self) -> f64 {
        if self.batches == 0 {
            0.0
        } else {
            self.total_seconds / self.batches as f64
        }
    }
}

/// A copy of the counters at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Deliveries taken from the source.
    pub received: u64,
    /// Deliveries acknowledged because every sink committed them (filtered ones included).
    pub acked: u64,
    /// Deliveries acknowledged without reaching a sink (a processor dropped them).
    pub filtered: u64,
    /// Deliveries written to the dead-letter destination, then acknowledged.
    pub dead_lettered: u64,
    /// In-process retry attempts (one per message per retried write).
    pub retried: u64,
    /// Waits of a message on an unreachable destination (one per message per wait); they use
    /// up no attempt.
    pub unavailable_waits: u64,
    /// Deliveries handed back to the broker for a delayed retry.
    pub broker_retried: u64,
    /// Failed attempts to write dead letters (each retried).
    pub dead_letter_write_failures: u64,
    /// Sink batch writes.
    pub batches: u64,
}

impl StatsSnapshot {
    /// Deliveries settled one way or another.
    pub fn settled(&self) -> u64 {
        self.acked + self.dead_lettered + self.broker_retried
    }

    /// Deliveries received and not settled yet.
    pub fn in_flight(&self) -> u64 {
        self.received.saturating_sub(self.settled())
    }
}

impl Stats {
    /// A copy of the counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            received: self.received.load(Relaxed),
            acked: self.acked.load(Relaxed),
            filtered: self.filtered.load(Relaxed),
            dead_lettered: self.dead_lettered.load(Relaxed),
            retried: self.retried.load(Relaxed),
            unavailable_waits: self.unavailable_waits.load(Relaxed),
            broker_retried: self.broker_retried.load(Relaxed),
            dead_letter_write_failures: self.dead_letter_write_failures.load(Relaxed),
            batches: self.batches.load(Relaxed),
        }
    }

    pub(crate) fn record_received(&self, n: usize) {
        self.received.fetch_add(n as u64, Relaxed);
        counter!("riverbed_messages_received_total").increment(n as u64);
        gauge!("riverbed_messages_in_flight").increment(n as f64);
    }

    pub(crate) fn record_acked(&self, n: usize) {
        if n > 0 {
            self.acked.fetch_add(n as u64, Relaxed);
            counter!("riverbed_messages_acked_total").increment(n as u64);
            gauge!("riverbed_messages_in_flight").decrement(n as f64);
        }
    }

    pub(crate) fn record_filtered(&self, n: usize) {
        if n > 0 {
            self.filtered.fetch_add(n as u64, Relaxed);
            counter!("riverbed_messages_filtered_total").increment(n as u64);
        }
    }

    pub(crate) fn record_retry(&self, sink: &str, n: usize) {
        self.retried.fetch_add(n as u64, Relaxed);
        counter!("riverbed_retries_total", "sink" => sink.to_owned()).increment(n as u64);
    }

    pub(crate) fn record_unavailable_wait(&self, sink: &str, n: usize) {
        self.unavailable_waits.fetch_add(n as u64, Relaxed);
        counter!("riverbed_sink_unavailable_waits_total", "sink" => sink.to_owned())
            .increment(n as u64);
    }

    pub(crate) fn record_broker_retry(&self, n: usize) {
        if n > 0 {
            self.broker_retried.fetch_add(n as u64, Relaxed);
            counter!("riverbed_broker_retries_total").increment(n as u64);
            gauge!("riverbed_messages_in_flight").decrement(n as f64);
        }
    }

    /// The batch write times of every (sink, partition) that wrote since the last call, in
    /// sink then partition order; the period starts anew. Meant for one reader (a task that
    /// publishes them every period).
    pub fn take_write_times(&self) -> Vec<WriteTimes> {
        let times = std::mem::take(&mut *self.write_times.lock().expect("stats lock poisoned"));
        times
            .into_values()
            .flat_map(BTreeMap::into_values)
            .collect()
    }

    pub(crate) fn record_batch(&self, sink: &str, partition: usize, size: usize, seconds: f64) {
        self.batches.fetch_add(1, Relaxed);
        {
            let mut times = self.write_times.lock().expect("stats lock poisoned");
            if !times.contains_key(sink) {
                times.insert(sink.to_owned(), BTreeMap::new());
            }
            let t = times
                .get_mut(sink)
                .expect("inserted above")
                .entry(partition)
                .or_insert_with(|| WriteTimes {
                    sink: sink.to_owned(),
                    partition,
                    batches: 0,
                    messages: 0,
                    min_seconds: f64::INFINITY,
                    max_seconds: 0.0,
                    total_seconds: 0.0,
                });
            t.batches += 1;
            t.messages += size as u64;
            t.min_seconds = t.min_seconds.min(seconds);
            t.max_seconds = t.max_seconds.max(seconds);
            t.total_seconds += seconds;
        }
        metrics::histogram!("riverbed_sink_write_seconds", "sink" => sink.to_owned())
            .record(seconds);
        metrics::histogram!("riverbed_sink_batch_size", "sink" => sink.to_owned())
            .record(size as f64);
    }

    pub(crate) fn record_dead_lettered(&self, letters: &[DeadLetter]) {
        self.dead_lettered.fetch_add(letters.len() as u64, Relaxed);
        gauge!("riverbed_messages_in_flight").decrement(letters.len() as f64);
        for l in letters {
            counter!("riverbed_dead_letters_total", "reason" => l.reason.clone(), "stage" => l.stage.clone())
                .increment(1);
        }
    }

    pub(crate) fn record_dead_letter_failure(&self) {
        self.dead_letter_write_failures.fetch_add(1, Relaxed);
        counter!("riverbed_dead_letter_write_failures_total").increment(1);
    }
}
