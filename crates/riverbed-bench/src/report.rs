//! The results as a markdown table, and writing it into a marked section of a file.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};

use crate::measure::Sample;
use crate::scenarios::Scenario;

/// One harness invocation's results.
pub struct Run<'a> {
    pub runs: u32,
    pub count: u64,
    pub load: f64,
    pub selected: &'a [Scenario],
    pub results: &'a HashMap<&'a str, Sample>,
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            let kib: u64 = s.lines().next()?.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib as f64 / 1024.0 / 1024.0)
        })
        .unwrap_or(0.0);
    format!("{cores} cores ({cpu}), {mem_gib:.0} GiB")
}

fn output_of(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into())
}

/// The command that produced the figures, as a user would type it.
fn command() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    format!(
        "cargo run --release -p riverbed-bench -- {}",
        args.join(" ")
    )
}

/// The table with its heading lines: command, machine, date, commit, what a row is.
pub fn render(run: &Run<'_>) -> String {
    let mut out = String::new();
    let date = output_of("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    let repo = env!("CARGO_MANIFEST_DIR");
    let commit = output_of("git", &["-C", repo, "rev-parse", "--short", "HEAD"]);
    out.push_str(&format!(
        "`{}`\n\nMachine: {}. Measured {date} at commit {commit}. {} messages per run unless the \
         scenario says otherwise; median of {} runs, each in its own process; latency (publish \
         -> every sink committed and the ack handed to the source) at {:.0}% of the scenario's \
         median throughput.\n\n",
        command(),
        machine(),
        run.count,
        run.runs,
        run.load * 100.0
    ));
    out.push_str(
        "| scenario | msg/s | x ceiling | x naive | x hand-written | p50 ms | p99 ms | peak RSS MiB | CPU s / M msgs | what |\n",
    );
    out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n");
    let ratio = |r: &Sample, other: Option<&str>| {
        other
            .and_then(|o| run.results.get(o))
            .map(|b| format!("{:.2}", r.rate() / b.rate()))
            .unwrap_or_default()
    };
    let ms = |v: Option<f64>| v.map(|v| format!("{v:.1}")).unwrap_or_default();
    for s in run.selected {
        let Some(r) = run.results.get(s.name) else {
            continue;
        };
        out.push_str(&format!(
            "| {} | {:.0} | {} | {} | {} | {} | {} | {:.1} | {:.2} | {} |\n",
            s.name,
            r.rate(),
            ratio(r, s.ceiling),
            ratio(r, s.baseline),
            ratio(r, hand_written(s.name)),
            ms(r.p50_ms),
            ms(r.p99_ms),
            r.peak_rss_kib as f64 / 1024.0,
            r.cpu_per_million(),
            s.what
        ));
    }
    out
}

/// The hand-written consumer of the same job that a Riverbed PostgreSQL row is compared with
/// (`amqp-pg-handwritten`: RabbitMQ -> PostgreSQL append, written as an expert would).
fn hand_written(scenario: &str) -> Option<&'static str> {
    let reference = "amqp-pg-handwritten";
    (scenario.starts_with("amqp-pg-") && scenario != reference).then_some(reference)
}

/// Replaces the text between `<!-- riverbed-bench:SECTION:begin -->` and its `end` marker in
/// `path` with `table`, or appends a new marked section.
pub fn write_section(path: &Path, section: &str, table: &str) -> Result<()> {
    let begin = format!("<!-- riverbed-bench:{section}:begin -->");
    let end = format!("<!-- riverbed-bench:{section}:end -->");
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let block = format!("{begin}\n{table}{end}");
    let new = match (old.find(&begin), old.find(&end)) {
        (Some(b), Some(e)) if b < e => format!("{}{block}{}", &old[..b], &old[e + end.len()..]),
        _ => format!("{}\n{block}\n", old.trim_end()),
    };
    std::fs::write(path, new).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_section_is_replaced_in_place_and_appended_when_missing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("B.md");
        std::fs::write(&path, "# B\n\nintro\n").unwrap();
        write_section(&path, "main", "one\n").unwrap();
        write_section(&path, "other", "x\n").unwrap();
        write_section(&path, "main", "two\n").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "# B\n\nintro\n<!-- riverbed-bench:main:begin -->\ntwo\n<!-- riverbed-bench:main:end -->\n\
             <!-- riverbed-bench:other:begin -->\nx\n<!-- riverbed-bench:other:end -->\n"
        );
    }
}
