//! A second metrics recorder beside Prometheus: it keeps every counter and gauge, and the raw
//! samples of the few histograms the dashboard draws, so the sampler can take rates and
//! percentiles per interval (Prometheus only keeps cumulative buckets).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_util::registry::{AtomicStorage, Registry};

/// Histograms whose samples are kept until the sampler drains them; others are not captured.
pub const CAPTURED_HISTOGRAMS: &[&str] = &[
    "riverbed_end_to_end_seconds",
    "riverbed_sink_write_seconds",
    "riverbed_sink_batch_size",
];

/// The capturing recorder; read with [`Capture::counters`] and [`Capture::drain`].
pub struct Capture {
    registry: Registry<Key, AtomicStorage>,
}

impl Default for Capture {
    fn default() -> Self {
        Capture {
            registry: Registry::atomic(),
        }
    }
}

/// The value of `label` in `key` (`""` without it).
fn label_of(key: &Key, label: &str) -> String {
    key.labels()
        .find(|l| l.key() == label)
        .map_or_else(String::new, |l| l.value().to_owned())
}

impl Capture {
    /// The counters named `name`, summed by the value of their label `label`.
    pub fn counters(&self, name: &str, label: &str) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        self.registry.visit_counters(|key, c| {
            if key.name() == name {
                *out.entry(label_of(key, label)).or_default() += c.load(Ordering::Relaxed);
            }
        });
        out
    }

    /// Takes the samples the histograms named `name` recorded since the last drain, grouped by
    /// the value of their label `label`.
    pub fn drain(&self, name: &str, label: &str) -> BTreeMap<String, Vec<f64>> {
        let mut out = BTreeMap::<String, Vec<f64>>::new();
        self.registry.visit_histograms(|key, h| {
            if key.name() == name {
                let slot = out.entry(label_of(key, label)).or_default();
                h.clear_with(|block| slot.extend_from_slice(block));
            }
        });
        out
    }
}

impl Recorder for Capture {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.registry.get_or_create_counter(key, Arc::clone))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.registry.get_or_create_gauge(key, Arc::clone))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        if CAPTURED_HISTOGRAMS.contains(&key.name()) {
            Histogram::from_arc(self.registry.get_or_create_histogram(key, Arc::clone))
        } else {
            Histogram::noop()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_group_by_label_and_histograms_drain_once() {
        let capture = Capture::default();
        metrics::with_local_recorder(&capture, || {
            metrics::counter!("riverbed_dead_letters_total", "reason" => "decode", "stage" => "a")
                .increment(2);
            metrics::counter!("riverbed_dead_letters_total", "reason" => "decode", "stage" => "b")
                .increment(3);
            metrics::counter!("riverbed_dead_letters_total", "reason" => "rejected").increment(1);
            metrics::histogram!("riverbed_sink_write_seconds", "sink" => "pg").record(0.5);
            metrics::histogram!("riverbed_http_request_seconds").record(0.5);
        });
        let dl = capture.counters("riverbed_dead_letters_total", "reason");
        assert_eq!(dl.get("decode"), Some(&5));
        assert_eq!(dl.get("rejected"), Some(&1));
        let first = capture.drain("riverbed_sink_write_seconds", "sink");
        assert_eq!(first.get("pg"), Some(&vec![0.5]));
        let second = capture.drain("riverbed_sink_write_seconds", "sink");
        assert_eq!(second.get("pg"), Some(&vec![]), "drained once");
        assert!(
            capture
                .drain("riverbed_http_request_seconds", "")
                .is_empty()
        );
    }
}
