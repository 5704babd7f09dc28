//! `riverbed run`: runs a pipeline file until stopped, and swaps in a changed configuration
//! without losing or repeating a message.
//!
//! A change (the admin API, SIGHUP, the control queue: see `control`) is checked first: the
//! new text must pass `riverbed validate`'s checks, and then be built for real (sinks and
//! dead-letter destination connected, tables created) while the running pipeline goes on. A
//! change that fails either is refused and answered; nothing stops. Only then is the running
//! pipeline drained, exactly as on SIGTERM (intake stopped, everything in flight written and
//! acknowledged, the source closed, so the broker has nothing of ours unsettled), and the new
//! one built again from the state the old one left (stored offsets, aggregate snapshots) and
//! started. Should that second build fail, the old configuration is built again and runs on.
//!
//! # Layout
//! - `change`: turning a change into the new file text.
//! - `control`: where changes come from and how they are answered.

pub mod change;
pub mod control;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use riverbed_core::{PipelineError, Report, StatsSnapshot};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{admin, config, leader, progress, signals};
use change::Invalid;
use control::{Answer, Controller, Request, Verdict};

/// How one pipeline generation ended.
enum Ended {
    /// The source ran dry, or the process was asked to stop.
    Finished(Result<Report, PipelineError>),
    /// It drained to give partition `partition` back (more than this instance's share).
    HandBack {
        partition: u16,
        report: Result<Report, PipelineError>,
    },
    /// It drained for `request`, whose new text is `text`.
    Swap {
        request: Request,
        text: String,
        changed: Vec<String>,
        report: Result<Report, PipelineError>,
        /// When the running pipeline was told to drain.
        since: std::time::Instant,
    },
}

/// Runs the pipeline file at `path` until it ends or the process is stopped.
pub async fn run(path: PathBuf, quiet: bool) -> Result<ExitCode> {
    let mut text = std::fs::read_to_string(&path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let mut plan = load(&path, &text)?;
    let singleton = match &plan.cluster {
        Some(config::ClusterPlan::Singleton(s)) => Some(s.clone()),
        _ => None,
    };
    let (controller, mut requests) = Controller::new();
    let admin = admin::start(&plan, &path, &text, controller.clone()).await?;
    let stop = CancellationToken::new();
    let signalled = stop.clone();
    let draining = admin.clone();
    tokio::spawn(async move {
        signals::shutdown().await;
        if let Some(a) = &draining {
            a.draining();
        }
        signalled.cancel();
    });
    control::watch_hangups(path.clone(), controller.clone())?;
    if let Some(queue) = plan.control.take() {
        control::serve_queue(queue, controller.clone(), stop.clone());
    }
    let lease = match &singleton {
        Some(s) => {
            let lead = leader::lead(s, stop.clone().cancelled_owned());
            tokio::pin!(lead);
            loop {
                tokio::select! {
                    led = &mut lead => match led? {
                        Some(lease) => break Some((lease, s.name.clone())),
                        None => return Ok(ExitCode::SUCCESS),
                    },
                    Some(request) = requests.recv() => {
                        // A standby runs nothing: a change that passes the check is kept for
                        // when it leads, so every instance can be given the same change.
                        match valid(&request.change, &text, &path) {
                            Ok((new_text, changed, new_plan)) => {
                                if let Some(a) = &admin {
                                    a.reconfigured(a.view(&new_plan, &new_text));
                                }
                                text = new_text;
                                plan = new_plan;
                                request.answer(Answer {
                                    verdict: Verdict::Applied,
                                    body: json!({"status": "applied", "standby": true,
                                                 "generation": 0, "changed": changed}),
                                });
                            }
                            Err(refusal) => request.answer(refusal),
                        }
                    }
                }
            }
        }
        None => None,
    };
    let fencing_token = lease.as_ref().and_then(|(l, _)| l.fencing_token());
    plan.fencing_token = fencing_token;
    let held = plan.held_partitions.clone();
    let mut releases = held.releases();
    let mut built = config::build(plan).await?;
    if let Some((lease, name)) = lease {
        leader::hold(lease, name);
        if let Some(a) = &admin {
            a.set_role(admin::Role::Leader);
        }
    }
    let mut generation = 1u64;
    let mut applied: Option<(Request, Answer)> = None;
    let mut totals = Totals::default();
    loop {
        let ended = run_generation(
            (built, applied.take()),
            &stop,
            (&mut requests, &mut releases),
            &text,
            &path,
            &admin,
            quiet,
        )
        .await;
        let (request, new_text, changed, report, since) = match ended {
            Ended::Finished(report) => {
                let report = report?;
                totals.add(&report);
                totals.print(report.exhausted);
                return Ok(ExitCode::SUCCESS);
            }
            Ended::HandBack { partition, report } => {
                let report = report?;
                totals.add(&report);
                if stop.is_cancelled() {
                    totals.print(report.exhausted);
                    return Ok(ExitCode::SUCCESS);
                }
                held.release(partition);
                tracing::info!(
                    partition,
                    drained = report.drained,
                    "Partition handed back: drained, lease released"
                );
                let mut again = load(&path, &text)?;
                again.fencing_token = fencing_token;
                again.held_partitions = held.clone();
                built = config::build(again).await?;
                generation += 1;
                continue;
            }
            Ended::Swap {
                request,
                text,
                changed,
                report,
                since,
            } => (request, text, changed, report, since),
        };
        let report = match report {
            Ok(r) => r,
            Err(e) => {
                request.answer(Answer::refused(Verdict::Unavailable, &e.to_string()));
                return Err(e.into());
            }
        };
        totals.add(&report);
        if stop.is_cancelled() {
            request.answer(Answer::refused(
                Verdict::Stopping,
                "the process is stopping",
            ));
            totals.print(report.exhausted);
            return Ok(ExitCode::SUCCESS);
        }
        let mut next = load(&path, &new_text)?;
        next.fencing_token = fencing_token;
        next.held_partitions = held.clone();
        let shown = admin.as_ref().map(|a| a.view(&next, &new_text));
        built = match config::build(next).await {
            Ok(b) => {
                generation += 1;
                text = new_text;
                if let (Some(a), Some(shown)) = (&admin, shown) {
                    a.reconfigured(shown);
                }
                // Answered once the new pipeline is in place (admin status included).
                applied = Some((
                    request,
                    Answer {
                        verdict: Verdict::Applied,
                        body: json!({"status": "applied", "generation": generation,
                                     "drained": report.drained, "changed": changed,
                                     "swap_ms": since.elapsed().as_millis() as u64}),
                    },
                ));
                b
            }
            Err(e) => {
                request.answer(Answer::refused(
                    Verdict::Unavailable,
                    &format!(
                        "{}; the previous configuration runs again",
                        crate::error_chain(&e)
                    ),
                ));
                let mut old = load(&path, &text)?;
                old.fencing_token = fencing_token;
                old.held_partitions = held.clone();
                config::build(old).await?
            }
        };
    }
}

/// Runs one built pipeline until it ends, or until a change passes its checks and it has
/// drained for it. Changes that do not pass are answered here, while it runs on; `applied`,
/// the change this pipeline was built for, is answered once it runs.
async fn run_generation(
    (built, applied): (config::Built, Option<(Request, Answer)>),
    stop: &CancellationToken,
    (requests, releases): (
        &mut mpsc::Receiver<Request>,
        &mut mpsc::UnboundedReceiver<u16>,
    ),
    text: &str,
    path: &Path,
    admin: &Option<admin::AdminState>,
    quiet: bool,
) -> Ended {
    let config::Built {
        pipeline,
        tasks,
        probes,
    } = built;
    if let Some(a) = admin {
        a.running(pipeline.stats(), probes);
    }
    let tasks_stop = CancellationToken::new();
    let tasks: Vec<_> = tasks
        .into_iter()
        .map(|t| t(Box::pin(tasks_stop.clone().cancelled_owned())))
        .collect();
    let progress = (!quiet && std::io::stderr().is_terminal())
        .then(|| progress::Progress::start(pipeline.stats(), None));
    let swap = stop.child_token();
    let mut running = tokio::spawn(pipeline.run(swap.clone().cancelled_owned()));
    if let Some((request, answer)) = applied {
        request.answer(answer);
    }
    let joined = |r: Result<Result<Report, PipelineError>, tokio::task::JoinError>| {
        r.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    };
    let ended = loop {
        tokio::select! {
            report = &mut running => break Ended::Finished(joined(report)),
            Some(partition) = releases.recv() => {
                swap.cancel();
                let report = joined((&mut running).await);
                break Ended::HandBack { partition, report };
            }
            Some(request) = requests.recv() => {
                match check(&request.change, text, path).await {
                    Err(answer) => request.answer(answer),
                    Ok((text, changed)) => {
                        tracing::info!(origin = request.origin.as_str(), ?changed,
                            "Configuration accepted; draining the running pipeline");
                        let since = std::time::Instant::now();
                        swap.cancel();
                        let report = joined((&mut running).await);
                        break Ended::Swap { request, text, changed, report, since };
                    }
                }
            }
        }
    };
    tasks_stop.cancel();
    for t in tasks {
        let _ = t.await;
    }
    if let Some(p) = progress {
        p.finish();
    }
    ended
}

/// The new text of a change and the keys it changes, once it has passed the check and been
/// built (then dropped) for real: `Err` is the refusal to answer.
async fn check(
    change: &change::Change,
    current: &str,
    path: &Path,
) -> Result<(String, Vec<String>), Answer> {
    let (text, changed, plan) = valid(change, current, path)?;
    match config::build(plan).await {
        Ok(trial) => drop(trial),
        Err(e) => {
            return Err(Answer::refused(
                Verdict::Unavailable,
                &crate::error_chain(&e),
            ));
        }
    }
    Ok((text, changed))
}

/// The new text of a change, the keys it changes and its plan, when it passes the check.
fn valid(
    change: &change::Change,
    current: &str,
    path: &Path,
) -> Result<(String, Vec<String>, config::Plan), Answer> {
    let (text, changed) = change::apply(current, change).map_err(|e| match e {
        Invalid::Malformed(m) => Answer::refused(Verdict::Invalid, &m),
        Invalid::Fixed(m) => Answer::refused(Verdict::Fixed, &m),
    })?;
    let plan = config::load_str(&text)
        .map_err(|e| Answer::refused(Verdict::Invalid, &format!("{}: {e}", path.display())))?;
    Ok((text, changed, plan))
}

fn load(path: &Path, text: &str) -> Result<config::Plan> {
    config::load_str(text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// The counters of every generation, summed for the last line `riverbed run` prints.
struct Totals {
    stats: StatsSnapshot,
    /// Every generation drained.
    drained: bool,
    generations: u64,
}

impl Default for Totals {
    fn default() -> Self {
        Totals {
            stats: StatsSnapshot::default(),
            drained: true,
            generations: 0,
        }
    }
}

impl Totals {
    fn add(&mut self, r: &Report) {
        let (t, s) = (&mut self.stats, &r.stats);
        t.received += s.received;
        t.acked += s.acked;
        t.dead_lettered += s.dead_lettered;
        t.filtered += s.filtered;
        t.retried += s.retried;
        t.unavailable_waits += s.unavailable_waits;
        t.broker_retried += s.broker_retried;
        self.drained &= r.drained;
        self.generations += 1;
    }

    fn print(&self, exhausted: bool) {
        let s = &self.stats;
        println!(
            "{}",
            json!({
                "received": s.received,
                "acked": s.acked,
                "dead_lettered": s.dead_lettered,
                "filtered": s.filtered,
                "retried": s.retried,
                "unavailable_waits": s.unavailable_waits,
                "broker_retried": s.broker_retried,
                "drained": self.drained,
                "exhausted": exhausted,
                "generations": self.generations,
            })
        );
    }
}
