//! Quick throughput probe (not the benchmark harness).
use riverbed_core::{NoopSink, Pipeline};
use riverbed_embedded::*;
use std::time::Instant;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(dir.path().join("l.db"), Durability::Full)
        .await
        .unwrap();
    let mut g = Generator::new(DataKind::Sensors, 1, 100, None);
    let n = 200_000;
    let t = Instant::now();
    for _ in 0..(n / 1000) {
        let recs: Vec<Record> = (0..1000).map(|_| g.next_record()).collect();
        log.append("r", recs).await.unwrap();
    }
    println!("append: {:.0} msg/s", n as f64 / t.elapsed().as_secs_f64());
    let t = Instant::now();
    let src = LogSource::open(&log, "r", "c", false).await.unwrap();
    let r = Pipeline::builder()
        .source(src)
        .sink("n", NoopSink)
        .build()
        .unwrap()
        .run(std::future::pending())
        .await
        .unwrap();
    println!(
        "log->noop: {} in {:.2}s = {:.0} msg/s",
        r.stats.acked,
        t.elapsed().as_secs_f64(),
        r.stats.acked as f64 / t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let src = GenerateSource::new(
        Generator::new(DataKind::Sensors, 1, 100, None),
        Some(1_000_000),
        None,
    );
    let r = Pipeline::builder()
        .source(src)
        .key(riverbed_core::KeySpec::JsonPointer("/sensor_id".into()))
        .sink("n", NoopSink)
        .build()
        .unwrap()
        .run(std::future::pending())
        .await
        .unwrap();
    println!(
        "gen->noop keyed: {} in {:.2}s = {:.0} msg/s",
        r.stats.acked,
        t.elapsed().as_secs_f64(),
        r.stats.acked as f64 / t.elapsed().as_secs_f64()
    );
}
