//! The dashboard's history: one [`Sample`] per interval (rates from counter differences,
//! percentiles of the interval's samples), kept in a ring of bounded length.

use std::collections::{BTreeMap, VecDeque};

use riverbed_core::StatsSnapshot;
use serde::Serialize;

/// Counters at one instant: what two readings subtract into rates.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    /// The pipeline's counters.
    pub stats: StatsSnapshot,
    /// Retries and unavailable waits by sink, cumulative.
    pub sink_errors: BTreeMap<String, u64>,
    /// Dead letters by reason, cumulative.
    pub dead_letters: BTreeMap<String, u64>,
}

/// What one interval saw besides counters: its length, drained histogram samples, states.
#[derive(Debug, Clone, Default)]
pub struct Interval {
    /// Its length in seconds.
    pub seconds: f64,
    /// When it ended, in milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// End-to-end latencies (seconds) of the deliveries acked in it.
    pub end_to_end: Vec<f64>,
    /// Batch write times (seconds) by sink.
    pub write_seconds: BTreeMap<String, Vec<f64>>,
    /// Batch sizes by sink.
    pub batch_sizes: BTreeMap<String, Vec<f64>>,
    /// Every sink of the plan, with its breaker state when it has a breaker.
    pub sinks: Vec<(String, Option<&'static str>)>,
    /// The singleton role, when there is a lease.
    pub leader: Option<&'static str>,
}

/// Percentiles of a set of samples (nearest rank); `None` without samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// How many samples.
    pub count: usize,
    /// Median.
    pub p50: Option<f64>,
    /// 95th percentile.
    pub p95: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
}

impl Percentiles {
    /// The percentiles of `samples`.
    pub fn of(samples: &[f64]) -> Self {
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let rank = |q: f64| {
            let n = sorted.len();
            (n > 0).then(|| sorted[((q * n as f64).ceil() as usize).clamp(1, n) - 1])
        };
        Percentiles {
            count: sorted.len(),
            p50: rank(0.50),
            p95: rank(0.95),
            p99: rank(0.99),
        }
    }
}

/// One sink over one interval.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SinkSample {
    /// Messages written per second.
    pub writes: f64,
    /// Batches written per second.
    pub batches: f64,
    /// Retries and unavailable waits per second.
    pub errors: f64,
    /// Retries and unavailable waits since start.
    pub errors_total: u64,
    /// Batch write time.
    pub latency: Percentiles,
    /// Circuit breaker state (`closed`, `half_open`, `open`), when the sink has one.
    pub breaker: Option<&'static str>,
}

/// Cumulative counts at the end of a sample.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Totals {
    /// Deliveries received.
    pub received: u64,
    /// Deliveries acked.
    pub acked: u64,
    /// Deliveries dead-lettered.
    pub dead_lettered: u64,
}

/// One interval of the pipeline, as the dashboard draws it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    /// End of the interval, milliseconds since the Unix epoch.
    pub t: u64,
    /// Deliveries received per second.
    pub received: f64,
    /// Deliveries acked per second.
    pub acked: f64,
    /// Deliveries dead-lettered per second.
    pub dead_lettered: f64,
    /// Deliveries received and not settled at the end.
    pub in_flight: u64,
    /// Counts since start at the end.
    pub totals: Totals,
    /// End-to-end latency (receive to ack) of the deliveries acked in the interval.
    pub latency: Percentiles,
    /// Each sink.
    pub sinks: BTreeMap<String, SinkSample>,
    /// Dead letters by reason since start.
    pub dead_letters: BTreeMap<String, u64>,
    /// The singleton role (`standby`, `leader`), when there is a lease.
    pub leader: Option<&'static str>,
}

impl Sample {
    /// The interval `iv` from `before` to `after`. A counter that went down (a restarted
    /// pipeline) counts from zero rather than negative.
    pub fn between(before: &Counts, after: &Counts, iv: &Interval) -> Sample {
        let secs = iv.seconds.max(f64::EPSILON);
        let rate = |a: u64, b: u64| {
            let d = if b >= a { b - a } else { b };
            d as f64 / secs
        };
        let (s0, s1) = (&before.stats, &after.stats);
        let sinks = iv
            .sinks
            .iter()
            .map(|(name, breaker)| {
                let e0 = before.sink_errors.get(name).copied().unwrap_or(0);
                let e1 = after.sink_errors.get(name).copied().unwrap_or(0);
                let sizes = iv.batch_sizes.get(name).map_or(&[][..], Vec::as_slice);
                let times = iv.write_seconds.get(name).map_or(&[][..], Vec::as_slice);
                let sample = SinkSample {
                    writes: sizes.iter().sum::<f64>() / secs,
                    batches: sizes.len() as f64 / secs,
                    errors: rate(e0, e1),
                    errors_total: e1,
                    latency: Percentiles::of(times),
                    breaker: *breaker,
                };
                (name.clone(), sample)
            })
            .collect();
        Sample {
            t: iv.unix_ms,
            received: rate(s0.received, s1.received),
            acked: rate(s0.acked, s1.acked),
            dead_lettered: rate(s0.dead_lettered, s1.dead_lettered),
            in_flight: s1.in_flight(),
            totals: Totals {
                received: s1.received,
                acked: s1.acked,
                dead_lettered: s1.dead_lettered,
            },
            latency: Percentiles::of(&iv.end_to_end),
            sinks,
            dead_letters: after.dead_letters.clone(),
            leader: iv.leader,
        }
    }
}

/// The last `capacity` samples, oldest first.
#[derive(Debug, Clone, Serialize)]
pub struct Series {
    /// Milliseconds between samples.
    pub interval_ms: u64,
    /// How many samples are kept.
    pub capacity: usize,
    /// The samples, oldest first.
    pub samples: VecDeque<Sample>,
}

impl Series {
    /// An empty series of at most `capacity` samples taken every `interval_ms`.
    pub fn new(interval_ms: u64, capacity: usize) -> Self {
        Series {
            interval_ms,
            capacity,
            samples: VecDeque::with_capacity(capacity),
        }
    }

    /// Appends `sample`, dropping the oldest when full.
    pub fn push(&mut self, sample: Sample) {
        while self.samples.len() >= self.capacity.max(1) {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
    }
}

#[cfg(test)]
#[path = "series_tests.rs"]
mod tests;
