//! A live progress line (processed, acked, dead-lettered, rate) drawn from pipeline counters.

use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use riverbed_core::{Stats, StatsSnapshot};

/// Draws the counters of a running pipeline until dropped.
pub struct Progress {
    bar: ProgressBar,
    task: tokio::task::JoinHandle<()>,
}

impl Progress {
    /// Starts drawing `stats` on stderr (nothing when stderr is not a terminal). With `total`,
    /// a bar towards that many settled messages.
    pub fn start(stats: Arc<Stats>, total: Option<u64>) -> Self {
        let bar = match total {
            Some(t) => ProgressBar::new(t).with_style(
                ProgressStyle::with_template("{bar:30.cyan/blue} {pos:>9}/{len} settled  {msg}")
                    .expect("valid template")
                    .progress_chars("=> "),
            ),
            None => ProgressBar::new_spinner().with_style(
                ProgressStyle::with_template("{spinner} {msg}").expect("valid template"),
            ),
        };
        bar.set_draw_target(ProgressDrawTarget::stderr_with_hz(10));
        let b = bar.clone();
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let mut last = (Instant::now(), 0u64);
            let mut rate = 0.0;
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let s = stats.snapshot();
                let now = Instant::now();
                let dt = now.duration_since(last.0).as_secs_f64();
                if dt > 0.0 {
                    rate = 0.5 * rate + 0.5 * (s.settled() - last.1) as f64 / dt;
                }
                last = (now, s.settled());
                b.set_position(s.settled());
                b.set_message(line(&s, rate, started.elapsed()));
                b.tick();
            }
        });
        Progress { bar, task }
    }

    /// Stops drawing and clears the line.
    pub fn finish(self) {
        self.task.abort();
        self.bar.finish_and_clear();
    }
}

/// The progress text: processed, acked, dead-lettered, rate.
pub fn line(s: &StatsSnapshot, rate: f64, elapsed: Duration) -> String {
    format!(
        "processed {}  acked {}  dead-lettered {}  retries {}  {:.0} msg/s  {:.1}s",
        s.received,
        s.acked,
        s.dead_lettered,
        s.retried + s.broker_retried,
        rate,
        elapsed.as_secs_f64()
    )
}

/// A bar towards `total` items counted as `unit` ("letters", "confirmed") on stderr, hidden when
/// stderr is not a terminal: for the one-shot commands (`publish`, `dlq redrive`).
pub fn bar(total: u64, unit: &str) -> ProgressBar {
    let bar = ProgressBar::new(total).with_style(
        ProgressStyle::with_template(&format!(
            "{{bar:30.cyan/blue}} {{pos:>9}}/{{len}} {unit}  {{per_sec}}"
        ))
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_draw_target(if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        ProgressDrawTarget::stderr_with_hz(10)
    } else {
        ProgressDrawTarget::hidden()
    });
    bar
}
