//! The sampler's arithmetic: rates from counter differences, percentiles, a bounded ring.

use std::collections::BTreeMap;

use riverbed_core::StatsSnapshot;

use super::*;

fn counts(received: u64, acked: u64, dead: u64, errors: u64) -> Counts {
    Counts {
        stats: StatsSnapshot {
            received,
            acked,
            dead_lettered: dead,
            ..StatsSnapshot::default()
        },
        sink_errors: BTreeMap::from([("pg".to_owned(), errors)]),
        dead_letters: BTreeMap::from([("decode".to_owned(), dead)]),
    }
}

fn interval(seconds: f64) -> Interval {
    Interval {
        seconds,
        unix_ms: 1_000,
        end_to_end: (1..=100).map(|i| i as f64 / 1000.0).collect(),
        write_seconds: BTreeMap::from([("pg".to_owned(), vec![0.002, 0.004])]),
        batch_sizes: BTreeMap::from([("pg".to_owned(), vec![100.0, 300.0])]),
        sinks: vec![("pg".to_owned(), Some("closed")), ("idle".to_owned(), None)],
        leader: Some("leader"),
    }
}

#[test]
fn rates_are_counter_differences_over_the_interval() {
    let s = Sample::between(
        &counts(1_000, 900, 10, 4),
        &counts(3_000, 2_800, 14, 10),
        &interval(2.0),
    );
    assert_eq!(s.received, 1_000.0);
    assert_eq!(s.acked, 950.0);
    assert_eq!(s.dead_lettered, 2.0);
    assert_eq!(s.in_flight, 3_000 - 2_800 - 14);
    assert_eq!(s.totals.acked, 2_800);
    assert_eq!(s.dead_letters["decode"], 14);
    let pg = &s.sinks["pg"];
    assert_eq!(pg.writes, 200.0, "400 messages in 2 s");
    assert_eq!(pg.batches, 1.0);
    assert_eq!(pg.errors, 3.0);
    assert_eq!(pg.errors_total, 10);
    assert_eq!(pg.latency.p99, Some(0.004));
    assert_eq!(pg.breaker, Some("closed"));
    let idle = &s.sinks["idle"];
    assert_eq!((idle.writes, idle.latency.count), (0.0, 0));
    assert_eq!(idle.latency.p50, None);
    assert_eq!(s.leader, Some("leader"));
}

#[test]
fn a_counter_that_went_down_counts_from_zero() {
    let s = Sample::between(
        &counts(5_000, 5_000, 0, 0),
        &counts(300, 200, 0, 0),
        &interval(1.0),
    );
    assert_eq!(s.received, 300.0);
    assert_eq!(s.acked, 200.0);
}

#[test]
fn percentiles_take_the_nearest_rank() {
    let p = Percentiles::of(&(1..=100).rev().map(f64::from).collect::<Vec<_>>());
    assert_eq!(p.count, 100);
    assert_eq!((p.p50, p.p95, p.p99), (Some(50.0), Some(95.0), Some(99.0)));
    let one = Percentiles::of(&[7.0]);
    assert_eq!((one.p50, one.p99), (Some(7.0), Some(7.0)));
    assert_eq!(Percentiles::of(&[]).p50, None);
}

#[test]
fn the_ring_keeps_the_last_capacity_samples() {
    let mut series = Series::new(1_000, 600);
    let base = Sample::between(&counts(0, 0, 0, 0), &counts(0, 0, 0, 0), &interval(1.0));
    for t in 0..700 {
        series.push(Sample { t, ..base.clone() });
        assert!(series.samples.len() <= 600);
    }
    assert_eq!(series.samples.len(), 600);
    assert_eq!(
        series.samples.front().unwrap().t,
        100,
        "oldest dropped first"
    );
    assert_eq!(series.samples.back().unwrap().t, 699);
    let json = serde_json::to_value(&series).unwrap();
    assert_eq!(json["samples"].as_array().unwrap().len(), 600);
    assert_eq!(json["capacity"], 600);
}
