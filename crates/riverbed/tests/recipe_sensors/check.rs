//! What the watch queues must show: the aggregates computed offline from the simulator's
//! readings, one message per changed sensor per period, and metrics that add up.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use super::recipe::{Seen, Watched};
use super::{Middle, PERIOD};

/// A sensor's figures computed from the readings, in their order.
#[derive(Debug, Clone, Copy)]
pub struct Expected {
    pub count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
}

/// The figures of every sensor in the simulator's JSON lines.
pub fn expected(readings: &Path) -> BTreeMap<String, Expected> {
    let text = std::fs::read_to_string(readings).unwrap();
    let mut out: BTreeMap<String, Expected> = BTreeMap::new();
    let mut last_seq = 0;
    for line in text.lines() {
        let r: riverbed_sensor_sim::Reading = serde_json::from_str(line).unwrap();
        assert!(r.seq > last_seq, "the readings are written in seq order");
        last_seq = r.seq;
        out.entry(r.sensor_id)
            .and_modify(|e| {
                e.count += 1;
                e.sum += r.value;
                e.min = e.min.min(r.value);
                e.max = e.max.max(r.value);
            })
            .or_insert(Expected {
                count: 1,
                sum: r.value,
                min: r.value,
                max: r.value,
            });
    }
    out
}

/// The aggregates received so far, per sensor, in arrival order.
fn per_sensor(watched: &Watched) -> BTreeMap<String, Vec<Seen>> {
    let mut out: BTreeMap<String, Vec<Seen>> = BTreeMap::new();
    for s in watched.aggregates.lock().unwrap().iter() {
        let key = s.body["key"]
            .as_str()
            .expect("an aggregate has its key")
            .to_owned();
        out.entry(key).or_default().push(s.clone());
    }
    out
}

/// Readings counted in the latest aggregate of every sensor, together.
pub fn counted(watched: &Watched) -> u64 {
    per_sensor(watched)
        .values()
        .map(|v| {
            v.iter()
                .map(|s| s.body["count"].as_u64().unwrap())
                .max()
                .unwrap_or(0)
        })
        .sum()
}

/// Deliveries acknowledged, as the metrics messages add them up.
pub fn metrics_acked(watched: &Watched) -> u64 {
    let metrics = watched.metrics.lock().unwrap();
    metrics
        .iter()
        .map(|m| m.body["acked"].as_u64().unwrap())
        .sum()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-300)
}

/// The last aggregate of every sensor is the one computed offline: counts, minimum and maximum
/// exactly, sum and mean within 1e-9 relative.
pub fn final_aggregates(watched: &Watched, expected: &BTreeMap<String, Expected>) {
    let got = per_sensor(watched);
    let sensors: BTreeSet<&String> = got.keys().collect();
    assert_eq!(sensors, expected.keys().collect(), "the same sensors");
    for (sensor, e) in expected {
        let last = &got[sensor].last().unwrap().body;
        assert_eq!(last["count"].as_u64(), Some(e.count), "{sensor}: {last}");
        assert_eq!(last["min"].as_f64(), Some(e.min), "{sensor}: {last}");
        assert_eq!(last["max"].as_f64(), Some(e.max), "{sensor}: {last}");
        let (sum, mean) = (
            last["sum"].as_f64().unwrap(),
            last["mean"].as_f64().unwrap(),
        );
        assert!(close(sum, e.sum), "{sensor}: sum {sum}, expected {}", e.sum);
        let want = e.sum / e.count as f64;
        assert!(close(mean, want), "{sensor}: mean {mean}, expected {want}");
    }
}

/// Every aggregate published is a change (its sensor's count grows from one to the next, so
/// nothing is published twice or stale; after a crash one may come twice), and a sensor is
/// published at most once a period: apart from the batches a drain flushes early, its
/// aggregates are a period apart.
pub fn only_changes(watched: &Watched, period: Duration, middle: Middle, elapsed: Duration) {
    let early = middle.early_flushes();
    let readings = counted(watched);
    let mut published = 0;
    for (sensor, seen) in per_sensor(watched) {
        let counts: Vec<u64> = seen
            .iter()
            .map(|s| s.body["count"].as_u64().unwrap())
            .collect();
        assert!(
            counts
                .windows(2)
                .all(|w| w[0] < w[1] || (!middle.drains() && w[0] == w[1])),
            "{sensor}: each aggregate counts more readings than the one before: {counts:?}"
        );
        let short = seen
            .windows(2)
            .filter(|w| w[1].at.duration_since(w[0].at) < period.mul_f64(0.8))
            .count();
        assert!(
            short <= early,
            "{sensor}: {short} aggregates came less than a period after the one before"
        );
        let periods = (elapsed.as_secs_f64() / period.as_secs_f64()).ceil() as usize;
        assert!(
            seen.len() <= periods + early + 1,
            "{sensor}: {} aggregates in {periods} periods",
            seen.len()
        );
        published += seen.len() as u64;
    }
    assert!(
        published * 5 < readings,
        "coalesced: {published} aggregates published for {readings} readings"
    );
}

/// Every batcher (sink and partition) reports plausible write times, one message a period.
/// When every run drained (`readings` given), the metrics add up to the readings, and the
/// aggregates sink handed over exactly what the queue received.
pub fn metrics(watched: &Watched, readings: Option<u64>, elapsed: Duration, partitions: u64) {
    let metrics = watched.metrics.lock().unwrap().clone();
    let n = metrics.len() as f64;
    let periods = elapsed.as_secs_f64() / PERIOD.as_secs_f64();
    assert!(
        n >= periods / 2.0 && n <= periods + 6.0,
        "{n} metrics messages in {periods:.1} periods"
    );
    let total = |field: &str| -> u64 {
        metrics
            .iter()
            .map(|m| m.body[field].as_u64().unwrap())
            .sum()
    };
    if let Some(readings) = readings {
        assert_eq!(total("received"), readings);
        assert_eq!(total("acked"), readings);
    }
    let mut batchers = BTreeSet::new();
    let mut written_aggregates = 0;
    let mut fastest = 0.0f64;
    for m in &metrics {
        let b = &m.body;
        let throughput = b["throughput"].as_f64().unwrap();
        assert!((0.0..1e6).contains(&throughput), "{b}");
        fastest = fastest.max(throughput);
        assert!(b["period_ms"].as_f64().unwrap() >= 0.0, "{b}");
        for lane in b["batchers"].as_array().unwrap() {
            let sink = lane["sink"].as_str().unwrap().to_owned();
            let partition = lane["partition"].as_u64().unwrap();
            assert!(partition < partitions, "{lane}");
            assert!(lane["batches"].as_u64().unwrap() >= 1, "{lane}");
            let (min, mean, max) = (
                lane["min_ms"].as_f64().unwrap(),
                lane["mean_ms"].as_f64().unwrap(),
                lane["max_ms"].as_f64().unwrap(),
            );
            assert!(
                0.0 <= min && min <= mean + 1e-9 && mean <= max + 1e-9 && max < 10_000.0,
                "{lane}"
            );
            if sink == "aggregates" {
                written_aggregates += lane["messages"].as_u64().unwrap();
            }
            batchers.insert((sink, partition));
        }
    }
    assert!(fastest > 0.0, "some period acknowledged readings");
    let want: BTreeSet<(String, u64)> = ["aggregates", "state"]
        .iter()
        .flat_map(|s| (0..partitions).map(move |p| (s.to_string(), p)))
        .collect();
    assert_eq!(batchers, want, "every sink in every partition");
    let seen = watched.aggregates.lock().unwrap().len() as u64;
    assert!(
        readings.is_none() || written_aggregates == seen,
        "the aggregates written ({written_aggregates}) are those received ({seen})"
    );
}
