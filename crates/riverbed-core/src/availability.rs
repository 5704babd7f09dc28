//! Destinations that cannot be reached: their partitions wait and the intake pauses, and no
//! message's attempts are used up. One rule for every sink (and a circuit breaker that opens).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// The longest wait between two tries of an unreachable destination: short enough that a
/// pipeline resumes within seconds of the destination's return.
pub(crate) const MAX_OUTAGE_WAIT: Duration = Duration::from_secs(5);

/// How often a continuing outage is logged again.
const LOG_EVERY: Duration = Duration::from_secs(30);

/// Which sinks are unreachable right now, shared by the partitions and the intake.
#[derive(Debug)]
pub(crate) struct Availability {
    /// Writes waiting on an unreachable destination, pipeline-wide.
    waiting: watch::Sender<usize>,
    /// Per sink: writes waiting, and since when the sink has been unreachable.
    sinks: Mutex<HashMap<Arc<str>, (usize, Instant)>>,
}

impl Default for Availability {
    fn default() -> Self {
        Availability {
            waiting: watch::Sender::new(0),
            sinks: Mutex::new(HashMap::new()),
        }
    }
}

impl Availability {
    /// True when some write waits on an unreachable destination.
    pub fn any_down(&self) -> bool {
        *self.waiting.borrow() > 0
    }

    /// Completes when no write waits on an unreachable destination.
    pub async fn all_up(&self) {
        let mut rx = self.waiting.subscribe();
        // The sender lives as long as `self`, so the wait cannot fail.
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    /// A write of `sink` found its destination unreachable; it waits until the guard drops.
    pub fn enter(self: &Arc<Self>, sink: &Arc<str>, error: &str) -> Outage {
        let now = Instant::now();
        {
            let mut sinks = self.sinks.lock().expect("availability lock");
            let entry = sinks.entry(sink.clone()).or_insert((0, now));
            if entry.0 == 0 {
                entry.1 = now;
                metrics::gauge!("riverbed_sink_unavailable", "sink" => sink.to_string()).set(1.0);
                metrics::counter!("riverbed_sink_outages_total", "sink" => sink.to_string())
                    .increment(1);
                tracing::warn!(
                    sink = %sink,
                    error,
                    "Sink unavailable; its partitions wait and intake pauses (no attempt is used up)"
                );
            }
            entry.0 += 1;
        }
        self.waiting.send_modify(|n| *n += 1);
        Outage {
            availability: self.clone(),
            sink: sink.clone(),
            last_log: now,
        }
    }

    fn leave(&self, sink: &Arc<str>) {
        {
            let mut sinks = self.sinks.lock().expect("availability lock");
            if let Some(entry) = sinks.get_mut(sink) {
                entry.0 -= 1;
                if entry.0 == 0 {
                    let down = entry.1.elapsed();
                    metrics::gauge!("riverbed_sink_unavailable", "sink" => sink.to_string())
                        .set(0.0);
                    metrics::counter!("riverbed_sink_unavailable_seconds_total", "sink" => sink.to_string())
                        .increment(down.as_secs());
                    tracing::info!(
                        sink = %sink,
                        down_ms = down.as_millis() as u64,
                        "Sink available again; intake resumes"
                    );
                }
            }
        }
        self.waiting.send_modify(|n| *n -= 1);
    }

    /// How long `sink` has been unreachable, if it is.
    fn down_for(&self, sink: &str) -> Option<Duration> {
        let sinks = self.sinks.lock().expect("availability lock");
        sinks.get(sink).filter(|e| e.0 > 0).map(|e| e.1.elapsed())
    }
}

/// Which sinks of a running pipeline cannot reach their destination now: a read-only handle
/// for health checks ([`crate::Pipeline::sink_health`]).
#[derive(Debug, Clone)]
pub struct SinkHealth(pub(crate) Arc<Availability>);

impl SinkHealth {
    /// How long sink `name` has been unable to reach its destination, if it cannot now.
    pub fn unreachable_for(&self, name: &str) -> Option<Duration> {
        self.0.down_for(name)
    }
}

/// One write waiting on an unreachable destination; dropping it (success, or the write given
/// up at shutdown) counts it out.
#[derive(Debug)]
pub(crate) struct Outage {
    availability: Arc<Availability>,
    sink: Arc<str>,
    last_log: Instant,
}

impl Outage {
    /// Logs again that the destination is still unreachable, at most every 30 s.
    pub fn still_down(&mut self, error: &str) {
        if self.last_log.elapsed() < LOG_EVERY {
            return;
        }
        self.last_log = Instant::now();
        let down = self.availability.down_for(&self.sink).unwrap_or_default();
        tracing::warn!(
            sink = %self.sink,
            down_ms = down.as_millis() as u64,
            error,
            "Sink still unavailable; waiting"
        );
    }
}

impl Drop for Outage {
    fn drop(&mut self) {
        self.availability.leave(&self.sink);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn intake_waits_until_every_outage_is_over() {
        let a = Arc::new(Availability::default());
        let sink: Arc<str> = "pg".into();
        assert!(!a.any_down());
        let first = a.enter(&sink, "refused");
        let second = a.enter(&sink, "refused");
        assert!(a.any_down());
        let waiter = tokio::spawn({
            let a = a.clone();
            async move { a.all_up().await }
        });
        drop(first);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "one write still waits");
        drop(second);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("resumes once every outage is over")
            .expect("no panic");
        assert!(!a.any_down());
    }
}
