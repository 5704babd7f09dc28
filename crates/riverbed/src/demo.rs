//! `riverbed demo`: the whole pipeline on the embedded default, with nothing to install.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use riverbed_embedded::{DataKind, Durability, EmbeddedLog, Generator, Record, list_dead_letters};
use sqlx::Row;

use crate::config;
use crate::progress::Progress;

/// The demo's pipeline file, with `{dir}` standing for the data directory.
pub const DEMO_CONFIG: &str = include_str!("demo.toml");

/// Options of `riverbed demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Directory for the log and the output database (emptied first).
    #[arg(long, default_value = "riverbed-demo")]
    pub dir: PathBuf,
    /// Sensor readings to generate.
    #[arg(long, default_value_t = 200_000)]
    pub count: u64,
    /// Readings per second (unlimited when absent).
    #[arg(long)]
    pub rate: Option<u64>,
    /// One reading in this many is malformed, to show dead-lettering (0: none).
    #[arg(long, default_value_t = 10_000)]
    pub malformed_every: u64,
    /// Print the pipeline file and exit.
    #[arg(long)]
    pub print_config: bool,
}

/// Runs the demo.
pub async fn run(args: DemoArgs) -> Result<()> {
    let text = DEMO_CONFIG.replace("{dir}", &args.dir.display().to_string());
    if args.print_config {
        print!("{text}");
        return Ok(());
    }
    prepare_dir(&args.dir)?;
    let plan = config::load_str(&text).context("the built-in demo configuration")?;
    let pipeline = config::build(plan).await?.pipeline;
    let stats = pipeline.stats();
    let log = EmbeddedLog::open(args.dir.join("log.db"), Durability::Full).await?;
    let produced = Arc::new(AtomicBool::new(false));
    let producer = tokio::spawn(produce(
        log.clone(),
        args.count,
        args.rate,
        args.malformed_every,
        produced.clone(),
    ));
    eprintln!(
        "riverbed demo: {} sensor readings -> embedded log {} -> per-sensor aggregates -> SQLite {}",
        args.count,
        args.dir.join("log.db").display(),
        args.dir.join("out.db").display()
    );
    let progress = Progress::start(stats.clone(), Some(args.count));
    let started = Instant::now();
    let (count, s) = (args.count, stats.clone());
    let done = async move {
        let all_settled = async {
            while !(produced.load(Ordering::Acquire) && s.snapshot().settled() >= count) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::select! {
            _ = all_settled => {}
            _ = crate::signals::shutdown() => {}
        }
    };
    let report = pipeline.run(done).await?;
    progress.finish();
    if producer.is_finished() {
        producer.await??;
    } else {
        // Interrupted while still generating: stop generating too (what was appended stays
        // in the log for a later run).
        producer.abort();
    }
    let elapsed = started.elapsed();
    summary(&args.dir, &log, &report, elapsed).await
}

fn prepare_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for name in [
        "log.db",
        "log.db-wal",
        "log.db-shm",
        "out.db",
        "out.db-wal",
        "out.db-shm",
    ] {
        let p = dir.join(name);
        if p.exists() {
            std::fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
        }
    }
    Ok(())
}

async fn produce(
    log: EmbeddedLog,
    count: u64,
    rate: Option<u64>,
    malformed_every: u64,
    done: Arc<AtomicBool>,
) -> Result<()> {
    let mut generator = Generator::new(DataKind::Sensors, 7, 16, Some(malformed_every));
    let started = Instant::now();
    let chunk = rate.map_or(2000, |r| (r / 20).clamp(1, 2000));
    while generator.generated() < count {
        let n = chunk.min(count - generator.generated());
        let records: Vec<Record> = (0..n).map(|_| generator.next_record()).collect();
        log.append("readings", records).await?;
        if let Some(r) = rate {
            let due = Duration::from_secs_f64(generator.generated() as f64 / r as f64);
            tokio::time::sleep(due.saturating_sub(started.elapsed())).await;
        }
    }
    done.store(true, Ordering::Release);
    Ok(())
}

async fn summary(
    dir: &Path,
    log: &EmbeddedLog,
    report: &riverbed_core::Report,
    elapsed: Duration,
) -> Result<()> {
    let s = &report.stats;
    println!("\nriverbed demo finished in {:.2}s", elapsed.as_secs_f64());
    println!(
        "  processed {}  acked {}  dead-lettered {}  retries {}  ({:.0} msg/s, every delivery settled: {})",
        s.received,
        s.acked,
        s.dead_lettered,
        s.retried,
        s.settled() as f64 / elapsed.as_secs_f64().max(1e-9),
        report.drained
    );
    let letters = list_dead_letters(log, None, 1000).await?;
    let mut reasons = std::collections::BTreeMap::<String, usize>::new();
    for l in &letters {
        *reasons.entry(l.letter.reason.clone()).or_default() += 1;
    }
    for (reason, n) in &reasons {
        println!("  dead letters: {n} x {reason}");
    }
    if let Some(first) = letters.first() {
        let offset = first
            .letter
            .message
            .meta
            .position
            .map_or_else(|| "?".to_owned(), |p| p.to_string());
        println!("    e.g. offset {offset}: {}", first.letter.error);
    }
    let out = riverbed_sql::sqlite_pool(&dir.join("out.db")).await?;
    let readings: i64 = sqlx::query("SELECT count(*) FROM readings")
        .fetch_one(&out)
        .await?
        .get(0);
    println!("  rows in readings: {readings}");
    let rows = sqlx::query(
        "SELECT sensor_id, count, min, max, mean FROM sensor_stats ORDER BY sensor_id LIMIT 5",
    )
    .fetch_all(&out)
    .await?;
    println!("  sensor_stats (first 5 of 16):");
    for r in rows {
        println!(
            "    {:<10} count {:>6}  min {:>6.2}  max {:>6.2}  mean {:>6.2}",
            r.get::<String, _>(0),
            r.get::<i64, _>(1),
            r.get::<f64, _>(2),
            r.get::<f64, _>(3),
            r.get::<f64, _>(4)
        );
    }
    println!(
        "  look inside: sqlite3 {} 'SELECT * FROM sensor_stats'",
        dir.join("out.db").display()
    );
    println!(
        "  dead letters: riverbed dlq list {}",
        dir.join("log.db").display()
    );
    Ok(())
}
