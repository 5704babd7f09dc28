//! The catalogue matches the metrics the workspace's code emits, and follows the naming rules.

use std::collections::BTreeSet;
use std::path::Path;

use super::*;

/// Every metric name given to `counter!`, `gauge!` or `histogram!` under `dir`.
fn emitted(dir: &Path, out: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            emitted(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            for macro_name in ["counter!(", "gauge!(", "histogram!("] {
                for (i, _) in text.match_indices(macro_name) {
                    let rest = text[i + macro_name.len()..].trim_start();
                    let name = rest.strip_prefix('"').and_then(|r| r.split('"').next());
                    if let Some(name) = name.filter(|n| is_metric_name(n)) {
                        out.insert(name.to_owned());
                    }
                }
            }
        }
    }
}

fn is_metric_name(n: &str) -> bool {
    n.starts_with("riverbed_") && n.chars().all(|c| c.is_ascii_lowercase() || c == '_')
}

#[test]
fn every_emitted_metric_is_described_and_every_described_one_is_emitted() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut names = BTreeSet::new();
    emitted(crates, &mut names);
    names.remove("riverbed_build_info");
    let described: BTreeSet<String> = METRICS
        .iter()
        .map(|m| m.name.to_owned())
        .filter(|n| n != "riverbed_build_info")
        .collect();
    let missing: Vec<_> = names.difference(&described).collect();
    assert!(missing.is_empty(), "emitted but not described: {missing:?}");
    let unused: Vec<_> = described.difference(&names).collect();
    assert!(unused.is_empty(), "described but never emitted: {unused:?}");
    assert!(names.len() > 50, "the scan found only {names:?}");
}

#[test]
fn names_follow_the_prometheus_conventions() {
    let mut seen = BTreeSet::new();
    for m in METRICS {
        assert!(seen.insert(m.name), "{} described twice", m.name);
        assert!(m.name.starts_with("riverbed_"), "{}", m.name);
        assert!(!m.help.is_empty(), "{}", m.name);
        if m.kind == MetricKind::Counter {
            assert!(m.name.ends_with("_total"), "counter {}", m.name);
        } else {
            assert!(!m.name.ends_with("_total"), "{} is not a counter", m.name);
        }
        let seconds = m.name.ends_with("_seconds") || m.name.ends_with("_seconds_total");
        assert_eq!(
            seconds,
            m.unit == Unit::Seconds,
            "{}: unit and name",
            m.name
        );
    }
}

#[test]
fn histograms_get_buckets_for_what_they_measure() {
    let batch = METRICS
        .iter()
        .find(|m| m.name == "riverbed_sink_batch_size")
        .unwrap();
    assert_eq!(buckets(batch), BATCH_BUCKETS);
    let write = METRICS
        .iter()
        .find(|m| m.name == "riverbed_sink_write_seconds")
        .unwrap();
    assert_eq!(buckets(write), SECONDS_BUCKETS);
    for b in [SECONDS_BUCKETS, BATCH_BUCKETS] {
        assert!(b.windows(2).all(|w| w[0] < w[1]), "{b:?} must increase");
    }
}
