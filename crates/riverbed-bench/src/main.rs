//! `riverbed-bench`: runs each scenario several times, each run in its own process, and prints
//! a markdown table of the medians with ratios to the reference measured in the same run.
//!
//! ```sh
//! cargo run --release -p riverbed-bench -- --runs 3 --count 200000 --write BENCHMARKS.md
//! ```
//!
//! # Layout
//! - `measure`: child processes, timing, peak RSS, CPU time, medians.
//! - `report`: the markdown table, written into a section of BENCHMARKS.md with `--write`.
//! - `scenarios`: what is measured (runtime ceiling, embedded log, SQLite ceiling...).

#![forbid(unsafe_code)]

/// jemalloc: the runtime allocates small objects on several threads; with glibc's allocator
/// the runtime benchmark ran at a quarter of the speed (contention and consolidation), and
/// mimalloc, as fast, held five times the resident memory (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

mod measure;
mod report;
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
    /// Write the table into this file (such as BENCHMARKS.md), between the markers of
    /// `--section`, with the command, the machine, the date and the commit.
    #[arg(long)]
    write: Option<PathBuf>,
    /// The section of `--write` to replace (appended when the file has no such section).
    #[arg(long, default_value = "main")]
    section: String,
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
    let mut failed = Vec::new();
    for s in &selected {
        match measure(&rt, &args, s, &dir) {
            Ok(m) => {
                results.insert(s.name, m);
            }
            Err(e) => {
                // One broken scenario must not cost the figures of all the others.
                eprintln!("{:<24} FAILED: {e:#}", s.name);
                failed.push(s.name);
            }
        }
    }
    let table = report::render(&report::Run {
        runs: args.runs,
        count: args.count,
        load: args.load,
        selected: &selected,
        results: &results,
    });
    println!("{table}");
    if !failed.is_empty() {
        bail!("scenarios failed: {}; nothing written", failed.join(", "));
    }
    if let Some(path) = &args.write {
        report::write_section(path, &args.section, &table)?;
        eprintln!("wrote section `{}` of {}", args.section, path.display());
    }
    Ok(())
}

/// The median of `args.runs` runs of `s`, with its latency at the offered load if it has one.
fn measure(rt: &tokio::runtime::Runtime, args: &Args, s: &Scenario, dir: &Path) -> Result<Sample> {
    let mut samples = Vec::new();
    for run in 0..args.runs {
        let sample = run_once(rt, args, s, dir, run, 0)
            .inspect_err(|_| rt.block_on(scenarios::clean_up(ctx(args, s, dir, run, 0))))?;
        eprintln!("{:<24} run {run}: {:>10.0} msg/s", s.name, sample.rate());
        samples.push(sample);
    }
    let mut m = median(samples);
    if s.latency && args.load > 0.0 {
        let rate = (m.rate() * args.load).max(100.0) as u64;
        let l = run_once(rt, args, s, dir, args.runs, rate).inspect_err(|_| {
            rt.block_on(scenarios::clean_up(ctx(args, s, dir, args.runs, rate)))
        })?;
        eprintln!(
            "{:<24} at {rate} msg/s: p50 {:.1} ms, p99 {:.1} ms",
            s.name,
            l.p50_ms.unwrap_or(0.0),
            l.p99_ms.unwrap_or(0.0)
        );
        (m.p50_ms, m.p99_ms) = (l.p50_ms, l.p99_ms);
    }
    Ok(m)
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
