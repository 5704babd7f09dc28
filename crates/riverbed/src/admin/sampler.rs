//! The task that reads the pipeline once per interval and appends a sample to the history.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::AdminState;
use super::capture::Capture;
use super::series::{Counts, Interval, Sample, Series};

/// One sample a second.
pub const INTERVAL: Duration = Duration::from_secs(1);
/// Ten minutes of samples.
pub const CAPACITY: usize = 600;

/// An empty history of [`CAPACITY`] samples every [`INTERVAL`].
pub fn series() -> Series {
    Series::new(INTERVAL.as_millis() as u64, CAPACITY)
}

/// Samples `state` every [`INTERVAL`] until the process ends (nothing before the pipeline runs).
pub async fn run(state: AdminState) {
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut before: Option<(Instant, Counts)> = None;
    loop {
        tick.tick().await;
        let Some(observed) = state.observe() else {
            continue;
        };
        let capture = state.capture();
        let counts = counts(capture, observed.stats);
        let now = Instant::now();
        let interval = Interval {
            seconds: before
                .as_ref()
                .map_or(0.0, |(at, _)| (now - *at).as_secs_f64()),
            unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            end_to_end: capture
                .drain("riverbed_end_to_end_seconds", "")
                .into_values()
                .flatten()
                .collect(),
            write_seconds: capture.drain("riverbed_sink_write_seconds", "sink"),
            batch_sizes: capture.drain("riverbed_sink_batch_size", "sink"),
            sinks: observed.sinks,
            leader: observed.leader,
        };
        if let Some((_, prev)) = &before {
            let sample = Sample::between(prev, &counts, &interval);
            state.with_series(|s| s.push(sample));
        }
        before = Some((now, counts));
    }
}

fn counts(capture: &Capture, stats: riverbed_core::StatsSnapshot) -> Counts {
    let mut sink_errors = capture.counters("riverbed_retries_total", "sink");
    for (sink, n) in capture.counters("riverbed_sink_unavailable_waits_total", "sink") {
        *sink_errors.entry(sink).or_default() += n;
    }
    Counts {
        stats,
        sink_errors,
        dead_letters: capture.counters("riverbed_dead_letters_total", "reason"),
    }
}
