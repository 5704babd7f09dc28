//! `riverbed-bench`: runs each scenario several times, each run in its own process, and prints
//! a markdown table of the medians with ratios to the reference measured in the same run.
//!
//! ```sh
//! cargo run --release -p riverbed-bench -- --runs 3 --count 500000
//! ```
//!
//! # Layout
//! - `measure`: child processes, timing, peak RSS, CPU time, medians.
//! - `scenarios`: what is measured (runtime ceiling, embedded log, SQLite ceiling...).

#![forbid(unsafe_code)]

/// jemalloc: the runtime allocates small objects on several threads; with glibc's allocator
/// the runtime benchmark ran at a quarter of the speed (contention and consolidation), and
/// mimalloc, as fast, held five times the resident memory (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

mod measure;
mod scenarios;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Parser;

use measure::{Sample, median, run_child};
use scenarios::{Ctx, Scenario};

/// Benchmarks Riverbed pipelines against raw ceilings and naive consumers.
#[derive(Debug, Parser)]
#[command(name = "riverbed-bench")]
struct Args {
    /// Runs per scenario (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: u32,
    /// Messages per run (scenarios with their own count keep it).
    #[arg(long, default_value_t = 200_000)]
    count: u64,
    /// Only these scenarios (comma-separated); all but the long ones by default.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Also measure end-to-end latency of the latency-capable scenarios at this fraction of
    /// their measured throughput (0 to skip).
    #[arg(long, default_value_t = 0.5)]
    load: f64,
    /// Data directory (a temporary one by default).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Internal: run one scenario in this process and print its sample.
    #[arg(long, hide = true)]
    child: Option<String>,
    /// Internal: the run index of a child.
    #[arg(long, hide = true, default_value_t = 0)]
    run: u32,
    /// Internal: offered load of a latency child.
    #[arg(long, hide = true, default_value_t = 0)]
    rate: u64,
}

fn ctx(args: &Args, s: &Scenario, dir: &Path, run: u32, rate: u64) -> Ctx {
    Ctx {
        dir: dir.to_owned(),
        count: args.count,
        run,
        rate,
        params: s.params,
        name: s.name,
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if let Some(name) = &args.child {
        let dir = args.dir.clone().context("a child needs --dir")?;
        let scenario = scenarios::all()
            .into_iter()
            .find(|s| s.name == name)
            .context("unknown scenario")?;
        let sample = rt.block_on((scenario.run)(ctx(
            &args, &scenario, &dir, args.run, args.rate,
        )))?;
        println!("{}", serde_json::to_string(&sample)?);
        return Ok(());
    }
    let tmp = tempfile::tempdir()?;
    let dir = args.dir.clone().unwrap_or_else(|| tmp.path().to_owned());
    std::fs::create_dir_all(&dir)?;
    let selected: Vec<_> = scenarios::all()
        .into_iter()
        .filter(|s| {
            if args.only.is_empty() {
                s.by_default()
            } else {
                args.only.iter().any(|o| o == s.name)
            }
        })
        .collect();
    if selected.is_empty() {
        bail!("no scenario matches {:?}", args.only);
    }
    let mut results: HashMap<&str, Sample> = HashMap::new();
    for s in &selected {
        let mut samples = Vec::new();
        for run in 0..args.runs {
            let sample = run_once(&rt, &args, s, &dir, run, 0)?;
            eprintln!("{:<24} run {run}: {:>10.0} msg/s", s.name, sample.rate());
            samples.push(sample);
        }
        let mut m = median(samples);
        if s.latency && args.load > 0.0 {
            let rate = (m.rate() * args.load).max(100.0) as u64;
            let l = run_once(&rt, &args, s, &dir, args.runs, rate)?;
            eprintln!(
                "{:<24} at {rate} msg/s: p50 {:.1} ms, p99 {:.1} ms",
                s.name,
                l.p50_ms.unwrap_or(0.0),
                l.p99_ms.unwrap_or(0.0)
            );
            (m.p50_ms, m.p99_ms) = (l.p50_ms, l.p99_ms);
        }
        results.insert(s.name, m);
    }
    print_table(&args, &selected, &results);
    Ok(())
}

fn run_once(
    rt: &tokio::runtime::Runtime,
    args: &Args,
    s: &Scenario,
    dir: &Path,
    run: u32,
    rate: u64,
) -> Result<Sample> {
    rt.block_on((s.prepare)(ctx(args, s, dir, run, rate)))
        .with_context(|| format!("preparing {}", s.name))?;
    let child_args = vec![
        "--dir".to_owned(),
        dir.display().to_string(),
        "--count".to_owned(),
        args.count.to_string(),
        "--run".to_owned(),
        run.to_string(),
        "--rate".to_owned(),
        rate.to_string(),
    ];
    run_child(s.name, &child_args)
}

fn print_table(args: &Args, selected: &[Scenario], results: &HashMap<&str, Sample>) {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    println!(
        "Machine: {cores} cores ({cpu}). {} messages per run unless the scenario says otherwise; median of {} runs, each in its own process; latency at {:.0}% of the scenario's median throughput.\n",
        args.count,
        args.runs,
        args.load * 100.0
    );
    println!(
        "| scenario | msg/s | x ceiling | x naive | p50 ms | p99 ms | peak RSS MiB | CPU s / M msgs | what |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---|");
    let ratio = |r: &Sample, other: Option<&str>| {
        other
            .and_then(|o| results.get(o))
            .map(|b| format!("{:.2}", r.rate() / b.rate()))
            .unwrap_or_default()
    };
    let ms = |v: Option<f64>| v.map(|v| format!("{v:.1}")).unwrap_or_default();
    for s in selected {
        let Some(r) = results.get(s.name) else {
            continue;
        };
        println!(
            "| {} | {:.0} | {} | {} | {} | {} | {:.1} | {:.2} | {} |",
            s.name,
            r.rate(),
            ratio(r, s.ceiling),
            ratio(r, s.baseline),
            ms(r.p50_ms),
            ms(r.p99_ms),
            r.peak_rss_kib as f64 / 1024.0,
            r.cpu_per_million(),
            s.what
        );
    }
}
