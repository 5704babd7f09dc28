//! Running a pipeline: intake with bounded in-flight, partitions, dead letters, graceful stop.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

use crate::availability::{Availability, SinkHealth};
use crate::builder::PipelineBuilder;
use crate::dead_letter::{DeadLetterRoute, DeadLetterSink, run_dead_letters};
use crate::key::KeySpec;
use crate::lane::SinkSlot;
use crate::partition::{Partition, Shared};
use crate::processor::Processor;
use crate::retry::RetryPolicy;
use crate::source::{Source, SourceError};
use crate::stats::{Stats, StatsSnapshot};
use crate::storm::{StormGuard, StormTripped, StormWatch};

use crate::intake::{Intake, IntakeEnd, RECV_CHUNK};
use crate::stop::Stop;
use crate::write::panic_text;

/// Everything the builder checked, ready to run.
pub(crate) struct Plan {
    pub key: KeySpec,
    pub max_in_flight: usize,
    pub retry: RetryPolicy,
    pub max_deliveries: u32,
    pub shutdown_grace: Duration,
    pub processors: Vec<Vec<Box<dyn Processor>>>,
    pub sinks: Vec<SinkSlot>,
    pub routes: Arc<[Vec<usize>]>,
    pub streams: Arc<[String]>,
    pub dead_letters: Arc<dyn DeadLetterSink>,
    pub storm_guard: Option<StormGuard>,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The counters at the end.
    pub stats: StatsSnapshot,
    /// Everything taken from the source settled before the end (false when the grace period
    /// ran out: the unsettled deliveries are redelivered by the broker later).
    pub drained: bool,
    /// The source ran dry by itself (rather than being stopped).
    pub exhausted: bool,
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// The source could not go on.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// A partition task ended while the pipeline ran (a panic outside any one message's
    /// handling): its keys would stall, so the pipeline stops; what it held is redelivered.
    #[error("partition task failed: {0}")]
    PartitionFailed(String),
    /// The dead-letter storm guard stopped the pipeline: most recent messages were
    /// dead-lettered (a bad deploy, a schema change?). What failed after that was given back
    /// to the source, not dead-lettered; fix the cause, then run again.
    #[error(
        "dead-letter storm: {} of the last {} settled messages were dead-lettered (more than \
         {:.0}%); stopped consuming",
        .tripped.dead_lettered, .tripped.settled, .max_share * 100.0
    )]
    DeadLetterStorm {
        /// What the guard saw.
        tripped: StormTripped,
        /// The share it allows.
        max_share: f64,
    },
}

/// A pipeline ready to run: see [`Pipeline::builder`].
pub struct Pipeline {
    source: Box<dyn Source>,
    plan: Plan,
    stats: Arc<Stats>,
    availability: Arc<Availability>,
}

impl Pipeline {
    /// Starts assembling a pipeline.
    pub fn builder() -> PipelineBuilder {
        PipelineBuilder::default()
    }

    pub(crate) fn new(source: Box<dyn Source>, plan: Plan) -> Self {
        Pipeline {
            source,
            plan,
            stats: Arc::new(Stats::default()),
            availability: Arc::default(),
        }
    }

    #[cfg(test)]
    pub(crate) fn batch_sizes(&self) -> Vec<usize> {
        self.plan
            .sinks
            .iter()
            .map(|s| s.batch.max_size.get())
            .collect()
    }

    /// The live counters, for progress displays and health checks.
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Which sinks cannot reach their destination while it runs, for health checks.
    pub fn sink_health(&self) -> SinkHealth {
        SinkHealth(self.availability.clone())
    }

    /// Runs until the source is exhausted or `shutdown` completes, then stops intake, lets every
    /// partition flush and settle within the grace period, flushes acks and returns.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<Report, PipelineError> {
        let Pipeline {
            mut source,
            plan,
            stats,
            availability,
        } = self;
        let stop = Stop::new(plan.shutdown_grace);
        let watcher = {
            let stop = stop.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = shutdown => stop.request(),
                    _ = stop.requested() => {}
                }
            })
        };
        let (dl_tx, dl_rx) = mpsc::unbounded_channel();
        let acker = source.acker();
        let storm = plan.storm_guard.map(|g| StormWatch::new(g, stop.clone()));
        let route = DeadLetterRoute::new(plan.dead_letters.clone(), stats.clone())
            .with_storm(storm.clone());
        source.route_dead_letters(route.clone());
        let dead_letter_task = tokio::spawn(run_dead_letters(dl_rx, route, acker.clone()));
        let shared = Arc::new(Shared {
            acker,
            dead_letters: dl_tx,
            stats: stats.clone(),
            policy: plan.retry,
            availability,
            storm: storm.clone(),
            end_to_end: metrics::histogram!("riverbed_end_to_end_seconds"),
        });
        let mut partitions = JoinSet::new();
        let mut inputs = Vec::new();
        let per_partition = (plan.max_in_flight / plan.processors.len()).max(1);
        for (index, procs) in plan.processors.into_iter().enumerate() {
            let (tx, rx) = mpsc::channel(per_partition.div_ceil(RECV_CHUNK).max(4));
            inputs.push(tx);
            let part = Partition::new(
                index,
                rx,
                procs,
                &plan.sinks,
                plan.routes.clone(),
                plan.streams.clone(),
                shared.clone(),
            );
            partitions.spawn(part.run());
        }
        let intake = Intake {
            key: plan.key,
            max_in_flight: plan.max_in_flight,
            max_deliveries: plan.max_deliveries,
            inputs,
            permits: Arc::new(Semaphore::new(plan.max_in_flight)),
            shared,
            next_unkeyed: 0,
            abandoned: 0,
        };
        tracing::info!(source = %source.describe(), "Pipeline started");
        let (result, failed) = tokio::select! {
            r = intake.run(source.as_mut(), &stop) => (r, None),
            Some(r) = partitions.join_next() => (Ok(IntakeEnd::default()), Some(partition_failure(r))),
        };
        if failed.is_some() {
            stop.request();
        }
        let exhausted = matches!(result, Ok(end) if end.exhausted);
        let abandoned = result.as_ref().map_or(0, |end| end.abandoned);
        // Intake is over (its senders are dropped): partitions flush what they hold and end.
        let mut drained = drain(&mut partitions, dead_letter_task, &stop).await && abandoned == 0;
        // Each close gets at most the grace period (at least a second): a connector whose
        // server stopped answering must not keep the process alive. A source that did not
        // close may not have passed on its last acknowledgements: the run is not drained then.
        let limit = stop.grace().max(Duration::from_secs(1));
        drained &= closed_in_time("the source", limit, source.close()).await;
        for slot in &plan.sinks {
            closed_in_time(&format!("sink `{}`", slot.name), limit, slot.sink.close()).await;
        }
        stop.request();
        let _ = watcher.await;
        let report = Report {
            stats: stats.snapshot(),
            drained,
            exhausted,
        };
        tracing::info!(
            received = report.stats.received,
            acked = report.stats.acked,
            dead_lettered = report.stats.dead_lettered,
            drained,
            "Pipeline stopped"
        );
        if let Some(error) = failed {
            return Err(PipelineError::PartitionFailed(error));
        }
        if let (Some(tripped), Some(g)) =
            (storm.as_ref().and_then(|s| s.tripped()), plan.storm_guard)
        {
            return Err(PipelineError::DeadLetterStorm {
                tripped: tripped.clone(),
                max_share: g.max_share,
            });
        }
        result.map(|_| report).map_err(PipelineError::from)
    }
}

/// A partition ended while the intake still fed it: nothing but a failure ends one early.
/// Logged at once, at ERROR: the process must not run on with a partition's keys stalled.
fn partition_failure(r: Result<(), tokio::task::JoinError>) -> String {
    let error = match r {
        Ok(()) => "ended while its input was open".to_owned(),
        Err(e) if e.is_panic() => format!("panicked: {}", panic_text(&*e.into_panic())),
        Err(e) => e.to_string(),
    };
    tracing::error!(error = %error, "A partition task failed; stopping the pipeline (its unsettled deliveries are redelivered)");
    error
}

/// Runs a connector's `close` for at most `limit`; true when it closed cleanly in time. A
/// failure or a timeout is logged: what the connector did not settle is redelivered.
async fn closed_in_time<E: std::fmt::Display>(
    what: &str,
    limit: Duration,
    close: impl Future<Output = Result<(), E>>,
) -> bool {
    match tokio::time::timeout(limit, close).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            tracing::error!(connector = what, error = %e, "Closing failed; what it did not settle is redelivered");
            false
        }
        Err(_) => {
            tracing::error!(
                connector = what,
                limit_ms = limit.as_millis() as u64,
                "Did not close in time; what it did not settle is redelivered"
            );
            false
        }
    }
}

/// Waits for the partitions and then the dead-letter task; gives up when the grace period after
/// a stop request is over, leaving what is unsettled to redelivery.
async fn drain(
    partitions: &mut JoinSet<()>,
    mut dead_letters: tokio::task::JoinHandle<()>,
    stop: &Stop,
) -> bool {
    let all = async {
        while let Some(r) = partitions.join_next().await {
            if let Err(e) = r {
                tracing::error!(error = %e, "A partition task failed");
            }
        }
        let _ = (&mut dead_letters).await;
    };
    tokio::select! {
        _ = all => true,
        _ = stop.grace_over() => {
            tracing::warn!(grace_ms = stop.grace().as_millis() as u64, "Grace period over; unsettled deliveries are left to redelivery");
            partitions.abort_all();
            dead_letters.abort();
            false
        }
    }
}
