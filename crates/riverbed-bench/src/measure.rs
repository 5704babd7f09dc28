//! Measuring one scenario run in its own process: throughput, peak RSS, CPU time.

use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// What one run of a scenario measured.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Sample {
    /// Messages moved in the measured section.
    pub messages: u64,
    /// Wall-clock seconds of the measured section.
    pub seconds: f64,
    /// Peak resident set of the whole process, KiB.
    pub peak_rss_kib: u64,
    /// User + system CPU seconds of the measured section.
    pub cpu_seconds: f64,
    /// Median end-to-end latency (publish to commit), for latency runs.
    #[serde(default)]
    pub p50_ms: Option<f64>,
    /// 99th percentile end-to-end latency, for latency runs.
    #[serde(default)]
    pub p99_ms: Option<f64>,
}

impl Sample {
    /// Messages per second.
    pub fn rate(&self) -> f64 {
        self.messages as f64 / self.seconds.max(1e-9)
    }

    /// CPU seconds per million messages.
    pub fn cpu_per_million(&self) -> f64 {
        self.cpu_seconds / (self.messages as f64 / 1e6).max(1e-9)
    }
}

fn cpu_now() -> f64 {
    use nix::sys::resource::{UsageWho, getrusage};
    let u = getrusage(UsageWho::RUSAGE_SELF).expect("getrusage");
    let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
    t(u.user_time()) + t(u.system_time())
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Times `section` (which returns how many messages it moved) inside the child process.
pub async fn timed<F, Fut>(section: F) -> Result<Sample>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<u64>>,
{
    let cpu = cpu_now();
    let started = Instant::now();
    let messages = section().await?;
    let seconds = started.elapsed().as_secs_f64();
    Ok(Sample {
        messages,
        seconds,
        peak_rss_kib: peak_rss_kib(),
        cpu_seconds: cpu_now() - cpu,
        p50_ms: None,
        p99_ms: None,
    })
}

/// Runs `scenario` in a fresh child process of this binary and reads its sample.
pub fn run_child(scenario: &str, args: &[String]) -> Result<Sample> {
    let exe = std::env::current_exe()?;
    let out = Command::new(exe)
        .arg("--child")
        .arg(scenario)
        .args(args)
        .output()
        .with_context(|| format!("running scenario {scenario}"))?;
    if !out.status.success() {
        bail!(
            "scenario {scenario} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().context("scenario printed nothing")?;
    serde_json::from_str(line).with_context(|| format!("scenario {scenario} printed {line}"))
}

/// The median sample by rate.
pub fn median(mut samples: Vec<Sample>) -> Sample {
    samples.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
    samples[samples.len() / 2]
}
