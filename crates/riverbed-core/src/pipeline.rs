//! Running a pipeline: intake with bounded in-flight, partitions, dead letters, graceful stop.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::builder::PipelineBuilder;
use crate::dead_letter::{DeadLetterSink, run_dead_letters};
use crate::key::{KeySpec, partition_of};
use crate::lane::SinkSlot;
use crate::partition::{Item, Partition, Shared};
use crate::processor::Processor;
use crate::retry::RetryPolicy;
use crate::source::{Delivery, Source, SourceError};
use crate::stats::{Stats, StatsSnapshot};
use crate::tracker::{StageFailure, Tracked};

/// Deliveries asked of the source at once.
const RECV_CHUNK: usize = 256;

/// Everything the builder checked, ready to run.
pub(crate) struct Plan {
    pub key: KeySpec,
    pub max_in_flight: usize,
    pub retry: RetryPolicy,
    pub shutdown_grace: Duration,
    pub processors: Vec<Vec<Box<dyn Processor>>>,
    pub sinks: Vec<SinkSlot>,
    pub routes: Arc<[Vec<usize>]>,
    pub streams: Arc<[String]>,
    pub dead_letters: Arc<dyn DeadLetterSink>,
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
}

/// A pipeline ready to run: see [`Pipeline::builder`].
pub struct Pipeline {
    source: Box<dyn Source>,
    plan: Plan,
    stats: Arc<Stats>,
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
        } = self;
        let stop = CancellationToken::new();
        let watcher = {
            let stop = stop.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = shutdown => stop.cancel(),
                    _ = stop.cancelled() => {}
                }
            })
        };
        let (dl_tx, dl_rx) = mpsc::unbounded_channel();
        let acker = source.acker();
        let dead_letter_task = tokio::spawn(run_dead_letters(
            dl_rx,
            plan.dead_letters.clone(),
            acker.clone(),
            stats.clone(),
        ));
        let shared = Arc::new(Shared {
            acker,
            dead_letters: dl_tx,
            stats: stats.clone(),
            policy: plan.retry,
        });
        let mut partitions = JoinSet::new();
        let mut inputs = Vec::new();
        let per_partition = (plan.max_in_flight / plan.processors.len()).max(1);
        for procs in plan.processors {
            let (tx, rx) = mpsc::channel(per_partition.div_ceil(RECV_CHUNK).max(4));
            inputs.push(tx);
            let part = Partition::new(
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
            inputs,
            permits: Arc::new(Semaphore::new(plan.max_in_flight)),
            shared,
            next_unkeyed: 0,
        };
        tracing::info!(source = %source.describe(), "Pipeline started");
        let result = intake.run(source.as_mut(), &stop).await;
        let exhausted = matches!(result, Ok(true));
        // Intake is over (its senders are dropped): partitions flush what they hold and end.
        let drained = drain(
            &mut partitions,
            dead_letter_task,
            &stop,
            plan.shutdown_grace,
        )
        .await;
        if let Err(e) = source.close().await {
            tracing::error!(error = %e, "Closing the source failed; unsettled deliveries will be redelivered");
        }
        for slot in &plan.sinks {
            if let Err(e) = slot.sink.close().await {
                tracing::error!(sink = %slot.name, error = %e, "Closing a sink failed");
            }
        }
        stop.cancel();
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
        result.map(|_| report).map_err(PipelineError::from)
    }
}

/// Waits for the partitions and then the dead-letter task; gives up `grace` after a stop was
/// requested, leaving what is unsettled to redelivery.
async fn drain(
    partitions: &mut JoinSet<()>,
    mut dead_letters: tokio::task::JoinHandle<()>,
    stop: &CancellationToken,
    grace: Duration,
) -> bool {
    let all = async {
        while let Some(r) = partitions.join_next().await {
            if let Err(e) = r {
                tracing::error!(error = %e, "A partition task failed");
            }
        }
        let _ = (&mut dead_letters).await;
    };
    let deadline = async {
        stop.cancelled().await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        _ = all => true,
        _ = deadline => {
            tracing::warn!(grace_ms = grace.as_millis() as u64, "Grace period over; unsettled deliveries are left to redelivery");
            partitions.abort_all();
            dead_letters.abort();
            false
        }
    }
}

/// The intake loop: takes in-flight permits, receives, keys and routes deliveries.
struct Intake {
    key: KeySpec,
    max_in_flight: usize,
    inputs: Vec<mpsc::Sender<Vec<Item>>>,
    permits: Arc<Semaphore>,
    shared: Arc<Shared>,
    next_unkeyed: usize,
}

impl Intake {
    /// Returns Ok(true) when the source is exhausted, Ok(false) when stopped.
    async fn run(
        mut self,
        source: &mut dyn Source,
        stop: &CancellationToken,
    ) -> Result<bool, SourceError> {
        let mut buf = Vec::with_capacity(RECV_CHUNK);
        let mut chunks: Vec<Vec<Item>> = (0..self.inputs.len()).map(|_| Vec::new()).collect();
        // Under backpressure few permits are free at a time; asking the source for one or two
        // messages per call would make every call a round trip. Wait for a useful chunk.
        let min_chunk = (self.max_in_flight / 8).clamp(1, RECV_CHUNK / 4);
        loop {
            let want = self
                .permits
                .available_permits()
                .clamp(min_chunk, RECV_CHUNK);
            let permits = tokio::select! {
                biased;
                _ = stop.cancelled() => return Ok(false),
                p = self.permits.clone().acquire_many_owned(want as u32) => p.expect("the semaphore is never closed"),
            };
            let more = tokio::select! {
                biased;
                _ = stop.cancelled() => return Ok(false),
                r = source.recv(&mut buf, want) => r?,
            };
            self.shared.stats.record_received(buf.len());
            let mut permits = permits;
            for d in buf.drain(..) {
                let permit = permits.split(1).expect("one permit per received delivery");
                self.route(d, permit, &mut chunks);
            }
            drop(permits);
            for (i, chunk) in chunks.iter_mut().enumerate() {
                if !chunk.is_empty() && self.inputs[i].send(std::mem::take(chunk)).await.is_err() {
                    return Err(SourceError::Fatal(
                        "a partition stopped unexpectedly".into(),
                    ));
                }
            }
            if !more {
                return Ok(true);
            }
        }
    }

    fn route(
        &mut self,
        d: Delivery,
        permit: tokio::sync::OwnedSemaphorePermit,
        chunks: &mut [Vec<Item>],
    ) {
        let Delivery { mut message, token } = d;
        let tracked = Arc::new(Tracked::new(token, &message, Some(permit)));
        if let Err(f) = self.key.apply(&mut message) {
            tracked.fail(StageFailure::now(f, "key", message.meta.attempt));
            let _ = self.shared.dead_letters.send(tracked);
            return;
        }
        let n = chunks.len();
        let p = match &message.key {
            Some(k) => partition_of(k, n),
            None => {
                self.next_unkeyed = (self.next_unkeyed + 1) % n;
                self.next_unkeyed
            }
        };
        message.meta.partition = p as u32;
        chunks[p].push((tracked, message));
    }
}
