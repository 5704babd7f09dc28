//! A partition: one task that runs the processors in delivery order and feeds its own batches.

use std::sync::Arc;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::availability::Availability;
use crate::lane::{Lane, SinkSlot};
use crate::message::Message;
use crate::outcome::Settlement;
use crate::processor::{Emitter, Processor};
use crate::retry::RetryPolicy;
use crate::source::{Acker, Settled};
use crate::stats::Stats;
use crate::storm::StormWatch;
use crate::tracker::{Final, StageFailure, Tracked};
use crate::write::{WriteContext, Written, panic_text, write_batch};

/// A delivery on its way through a partition.
pub(crate) type Item = (Arc<Tracked>, Message);

/// Settlements collected by a partition, with their deliveries held until they are counted
/// (a delivery's in-flight permit returns when it is dropped).
#[derive(Default)]
pub(crate) struct Settling {
    settled: Vec<Settled>,
    held: Vec<Arc<Tracked>>,
}

/// What every partition shares: where settlements go.
pub(crate) struct Shared {
    pub acker: Arc<dyn Acker>,
    pub dead_letters: mpsc::UnboundedSender<Arc<Tracked>>,
    pub stats: Arc<Stats>,
    pub policy: RetryPolicy,
    pub availability: Arc<Availability>,
    /// The dead-letter storm guard, when on.
    pub storm: Option<Arc<StormWatch>>,
    /// Time from receiving a delivery to acking it (`riverbed_end_to_end_seconds`).
    pub end_to_end: metrics::Histogram,
}

impl Shared {
    fn write_context(&self) -> WriteContext {
        WriteContext {
            policy: self.policy,
            stats: self.stats.clone(),
            availability: self.availability.clone(),
        }
    }

    /// Settles a delivery whose writes have all finished.
    pub fn finish(&self, t: Arc<Tracked>, out: &mut Settling) {
        match t.disposition(&self.policy) {
            Final::Ack => {
                let age = t.received_at().elapsed().unwrap_or_default();
                self.end_to_end.record(age.as_secs_f64());
                out.settled.push(Settled {
                    token: t.token(),
                    settlement: Settlement::Ack,
                    message: None,
                })
            }
            Final::Retry { next_attempt } => out.settled.push(Settled {
                token: t.token(),
                settlement: Settlement::Retry {
                    next_attempt,
                    delay: self.policy.delay_before(next_attempt),
                    failure: t.failure().expect("a retry has a failure"),
                },
                message: Some(t.retry_copy()),
            }),
            Final::DeadLetter => {
                // The receiver lives until every partition is gone; a send cannot fail first.
                let _ = self.dead_letters.send(t);
                return;
            }
        }
        out.held.push(t);
    }

    /// Hands settlements to the acker and counts them.
    pub fn flush(&self, out: &mut Settling) {
        if out.settled.is_empty() {
            return;
        }
        let retries = out
            .settled
            .iter()
            .filter(|s| matches!(s.settlement, Settlement::Retry { .. }))
            .count();
        self.stats.record_acked(out.settled.len() - retries);
        self.stats.record_broker_retry(retries);
        if let Some(storm) = &self.storm {
            storm.record_settled(out.settled.len());
        }
        self.acker.settle(std::mem::take(&mut out.settled));
        out.held.clear();
    }
}

/// One partition's task state.
pub(crate) struct Partition {
    /// Which partition this is (0-based).
    pub index: usize,
    pub rx: mpsc::Receiver<Vec<Item>>,
    pub processors: Vec<Box<dyn Processor>>,
    pub lanes: Vec<Lane>,
    /// For each stream (index 0 is `main`), the lanes that read it.
    pub routes: Arc<[Vec<usize>]>,
    pub streams: Arc<[String]>,
    pub shared: Arc<Shared>,
}

impl Partition {
    pub fn new(
        index: usize,
        rx: mpsc::Receiver<Vec<Item>>,
        processors: Vec<Box<dyn Processor>>,
        sinks: &[SinkSlot],
        routes: Arc<[Vec<usize>]>,
        streams: Arc<[String]>,
        shared: Arc<Shared>,
    ) -> Self {
        Partition {
            index,
            rx,
            processors,
            lanes: sinks.iter().cloned().map(Lane::new).collect(),
            routes,
            streams,
            shared,
        }
    }

    /// Runs until the input closes and every batch has settled.
    pub async fn run(mut self) {
        let mut writes: FuturesUnordered<BoxFuture<'static, Written>> = FuturesUnordered::new();
        let mut input_open = true;
        let mut settled = Settling::default();
        let mut emitter = Emitter::new(self.streams.clone());
        loop {
            let blocked = self.lanes.iter().any(Lane::is_blocked);
            let deadline = self.lanes.iter().filter_map(Lane::due_at).min();
            tokio::select! {
                biased;
                Some(done) = writes.next(), if !writes.is_empty() => {
                    self.settle_written(done, &mut settled);
                }
                items = self.rx.recv(), if input_open && !blocked => match items {
                    Some(items) => {
                        for (t, msg) in items {
                            self.handle(t, msg, &mut emitter, &mut settled);
                        }
                        self.shared.flush(&mut settled);
                    }
                    None => input_open = false,
                },
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {}
            }
            self.start_due(&mut writes, !input_open);
            if !input_open && writes.is_empty() && self.lanes.iter().all(Lane::is_empty) {
                return;
            }
        }
    }

    fn start_due(
        &mut self,
        writes: &mut FuturesUnordered<BoxFuture<'static, Written>>,
        force: bool,
    ) {
        let now = Instant::now();
        for (i, lane) in self.lanes.iter_mut().enumerate() {
            if let Some((messages, tracked)) = lane.take_due(now, force) {
                writes.push(Box::pin(write_batch(
                    (self.index, i),
                    lane.slot.clone(),
                    messages,
                    tracked,
                    self.shared.write_context(),
                )));
            }
        }
    }

    fn settle_written(&mut self, done: Written, settled: &mut Settling) {
        self.lanes[done.lane].busy = false;
        for (t, failure) in done.results {
            if let Some(f) = failure {
                t.fail(f);
            }
            if t.complete_one() {
                self.shared.finish(t, settled);
            }
        }
        self.shared.flush(settled);
    }

    /// Runs the processors on one delivery and queues its outputs on the lanes that read them.
    fn handle(
        &mut self,
        t: Arc<Tracked>,
        msg: Message,
        emitter: &mut Emitter,
        settled: &mut Settling,
    ) {
        emitter.out.clear();
        let attempt = msg.meta.attempt;
        let mut main = Some(msg);
        for p in &mut self.processors {
            let Some(m) = main.take() else { break };
            let processed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                p.process(m, emitter)
            }))
            .unwrap_or_else(|panic| {
                let text = panic_text(&*panic);
                tracing::error!(stage = p.name(), panic = %text, "A processor panicked on one message; it is dead-lettered and the partition goes on");
                Err(crate::Failure::new("panic", text))
            });
            match processed {
                Ok(next) => main = next,
                Err(f) => {
                    emitter.out.clear();
                    t.fail(StageFailure::now(f, p.name(), attempt));
                    self.shared.finish(t, settled);
                    return;
                }
            }
        }
        // Lanes write only after this returns, so the count can be set after queueing.
        let outputs = main
            .into_iter()
            .map(|m| (0, m))
            .chain(emitter.out.drain(..));
        let mut writes = 0u32;
        for (stream, m) in outputs {
            if let Some((last, rest)) = self.routes[stream].split_last() {
                for &l in rest {
                    self.lanes[l].push(m.clone(), t.clone());
                }
                self.lanes[*last].push(m, t.clone());
                writes += 1 + rest.len() as u32;
            }
        }
        if writes == 0 {
            self.shared.stats.record_filtered(1);
            self.shared.finish(t, settled);
            return;
        }
        t.expect(writes);
    }
}
