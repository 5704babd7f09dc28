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
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Parser;

use measure::{Sample, median, run_child};
use scenarios::Ctx;

/// Benchmarks Riverbed pipelines against raw ceilings and naive consumers.
#[derive(Debug, Parser)]
#[command(name = "riverbed-bench")]
struct Args {
    /// Runs per scenario (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: u32,
    /// Messages per run.
    #[arg(long, default_value_t = 500_000)]
    count: u64,
    /// Only these scenarios (comma-separated); all by default.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Data directory (a temporary one by default).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Internal: run one scenario in this process and print its sample.
    #[arg(long, hide = true)]
    child: Option<String>,
    /// Internal: the run index of a child.
    #[arg(long, hide = true, default_value_t = 0)]
    run: u32,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(name) = &args.child {
        let dir = args.dir.clone().context("a child needs --dir")?;
        let scenario = scenarios::all()
            .into_iter()
            .find(|s| s.name == name)
            .context("unknown scenario")?;
        let ctx = Ctx {
            dir,
            count: args.count,
            run: args.run,
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let sample = rt.block_on((scenario.run)(ctx))?;
        println!("{}", serde_json::to_string(&sample)?);
        return Ok(());
    }
    let tmp = tempfile::tempdir()?;
    let dir = args.dir.clone().unwrap_or_else(|| tmp.path().to_owned());
    std::fs::create_dir_all(&dir)?;
    let selected: Vec<_> = scenarios::all()
        .into_iter()
        .filter(|s| args.only.is_empty() || args.only.iter().any(|o| o == s.name))
        .collect();
    if selected.is_empty() {
        bail!("no scenario matches {:?}", args.only);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut results: HashMap<&str, Sample> = HashMap::new();
    for s in &selected {
        let ctx = Ctx {
            dir: dir.clone(),
            count: args.count,
            run: 0,
        };
        rt.block_on((s.prepare)(&ctx))
            .with_context(|| format!("preparing {}", s.name))?;
        let mut samples = Vec::new();
        for run in 0..args.runs {
            let child_args = vec![
                "--dir".to_owned(),
                dir.display().to_string(),
                "--count".to_owned(),
                args.count.to_string(),
                "--run".to_owned(),
                run.to_string(),
            ];
            let sample = run_child(s.name, &child_args)?;
            eprintln!("{:<24} run {run}: {:>10.0} msg/s", s.name, sample.rate());
            samples.push(sample);
        }
        results.insert(s.name, median(samples));
    }
    print_table(&args, &selected, &results);
    Ok(())
}

fn print_table(args: &Args, selected: &[scenarios::Scenario], results: &HashMap<&str, Sample>) {
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
        "Machine: {cores} cores, {cpu}. Messages per run: {}; median of {} runs, each in its own process.\n",
        args.count, args.runs
    );
    println!("| scenario | msg/s | vs | ratio | peak RSS MiB | CPU s / M msgs | what |");
    println!("|---|---:|---|---:|---:|---:|---|");
    for s in selected {
        let Some(r) = results.get(s.name) else {
            continue;
        };
        let (vs, ratio) = match s
            .versus
            .and_then(|v| results.get(v).map(|b| (v, r.rate() / b.rate())))
        {
            Some((v, x)) => (v.to_owned(), format!("{x:.2}")),
            None => ("".into(), "".into()),
        };
        println!(
            "| {} | {:.0} | {} | {} | {:.1} | {:.2} | {} |",
            s.name,
            r.rate(),
            vs,
            ratio,
            r.peak_rss_kib as f64 / 1024.0,
            r.cpu_per_million(),
            s.what
        );
    }
}
