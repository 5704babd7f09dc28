//! How far a source's deliveries are settled: a source wrapper that tracks the contiguous
//! prefix of acknowledged deliveries, so offset stores can move partitions that receive
//! nothing past positions every sink has settled.
//!
//! # When tracking stops
//! Tracking stops for the rest of the run, logged once at WARN, when a delivery is given back
//! (requeued, or sent to a delayed retry: the prefix cannot pass it in this run) or when more
//! than [`MAX_TRACKED`] deliveries wait behind one unsettled delivery (memory stays bounded).
//! The settled position then stays where it was, and so do the stored positions that follow
//! it: a crash re-reads everything from there (the tables absorb it by their key), and the
//! next run tracks again from its start.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use riverbed_core::{
    AckToken, Acker, Capabilities, ContiguousTracker, DeadLetterRoute, DeadLetterSink, Delivery,
    Settled, Settlement, Source, SourceError,
};

/// Deliveries tracked at most; past that (a delivery stuck for very long) tracking stops (see
/// the module docs).
const MAX_TRACKED: usize = 1 << 20;

/// The highest source position at or below which every delivery of this run is acknowledged:
/// committed by every sink, or dead-lettered. Cheap to read from any task.
#[derive(Debug, Clone)]
pub struct SettledPosition(Arc<AtomicI64>);

impl Default for SettledPosition {
    fn default() -> Self {
        SettledPosition(Arc::new(AtomicI64::new(-1)))
    }
}

impl SettledPosition {
    /// The position, once some prefix of deliveries with positions is settled.
    pub fn get(&self) -> Option<u64> {
        u64::try_from(self.0.load(Ordering::Acquire)).ok()
    }

    /// Raises the position to `position` (never lowers it).
    pub(crate) fn raise(&self, position: u64) {
        self.0.fetch_max(
            i64::try_from(position).unwrap_or(i64::MAX),
            Ordering::AcqRel,
        );
    }
}

/// The registered deliveries, in delivery order.
#[derive(Default)]
struct State {
    tracker: ContiguousTracker<Option<u64>>,
    seqs: HashMap<AckToken, (u64, Option<u64>)>,
    /// Tracking stopped for this run (see the module docs).
    stopped: bool,
}

struct Tracking {
    state: Mutex<State>,
    settled: SettledPosition,
    /// [`MAX_TRACKED`], but for tests.
    max_tracked: usize,
}

impl Tracking {
    fn register(&self, deliveries: &[Delivery]) {
        let mut st = self.state.lock().expect("tracking lock");
        if st.stopped {
            return;
        }
        for d in deliveries {
            let seq = st.tracker.register();
            st.seqs.insert(d.token, (seq, d.message.meta.position));
        }
        if st.tracker.outstanding() > self.max_tracked {
            let position = self.settled.get();
            tracing::warn!(
                tracked = self.max_tracked,
                ?position,
                "A delivery stays unsettled behind too many others; the settled position and stored offsets stop advancing for this run (a crash re-reads from there)"
            );
            stop(&mut st);
        }
    }

    fn settle(&self, settled: &[Settled]) {
        let mut st = self.state.lock().expect("tracking lock");
        if st.stopped {
            return;
        }
        for s in settled {
            let Some((seq, position)) = st.seqs.remove(&s.token) else {
                continue;
            };
            match s.settlement {
                Settlement::Ack => {
                    st.tracker.complete(seq, position);
                }
                Settlement::Requeue | Settlement::Retry { .. } => {
                    let position = self.settled.get();
                    tracing::warn!(
                        ?position,
                        "A delivery was given back to the source; the settled position and stored offsets stop advancing for this run (a crash re-reads from there)"
                    );
                    return stop(&mut st);
                }
            }
        }
        if let Some(Some(p)) = st.tracker.advance() {
            self.settled.raise(p);
        }
    }
}

fn stop(st: &mut State) {
    *st = State {
        stopped: true,
        ..State::default()
    };
}

/// A source whose settled prefix is published as a [`SettledPosition`]; everything else is
/// the wrapped source's.
pub struct TrackSettled<S> {
    inner: S,
    tracking: Arc<Tracking>,
}

impl<S: Source> TrackSettled<S> {
    /// Wraps `inner`; the returned position follows its settled deliveries.
    pub fn new(inner: S) -> (Self, SettledPosition) {
        Self::tracking_at_most(inner, MAX_TRACKED)
    }

    fn tracking_at_most(inner: S, max_tracked: usize) -> (Self, SettledPosition) {
        let settled = SettledPosition::default();
        let tracking = Arc::new(Tracking {
            state: Mutex::new(State::default()),
            settled: settled.clone(),
            max_tracked,
        });
        (TrackSettled { inner, tracking }, settled)
    }
}

struct TrackingAcker {
    inner: Arc<dyn Acker>,
    tracking: Arc<Tracking>,
}

impl Acker for TrackingAcker {
    fn settle(&self, settled: Vec<Settled>) {
        self.tracking.settle(&settled);
        self.inner.settle(settled);
    }
}

#[async_trait]
impl<S: Source> Source for TrackSettled<S> {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    async fn recv(&mut self, out: &mut Vec<Delivery>, max: usize) -> Result<bool, SourceError> {
        let start = out.len();
        let more = self.inner.recv(out, max).await?;
        self.tracking.register(&out[start..]);
        Ok(more)
    }

    fn acker(&self) -> Arc<dyn Acker> {
        Arc::new(TrackingAcker {
            inner: self.inner.acker(),
            tracking: self.tracking.clone(),
        })
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn dead_letters(&self) -> Option<Arc<dyn DeadLetterSink>> {
        self.inner.dead_letters()
    }

    fn route_dead_letters(&mut self, route: DeadLetterRoute) {
        self.inner.route_dead_letters(route);
    }

    async fn close(&mut self) -> Result<(), SourceError> {
        self.inner.close().await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use riverbed_core::testing::{Journal, MemorySource, numbered_messages};
    use riverbed_core::{Failure, Message};

    use super::*;

    fn settled(d: &Delivery, settlement: Settlement) -> Settled {
        Settled {
            token: d.token,
            settlement,
            message: Some(d.message.clone()),
        }
    }

    #[tokio::test]
    async fn the_position_follows_the_contiguous_acknowledged_prefix() {
        let mut messages: Vec<Message> = numbered_messages(6, 2);
        for (i, m) in messages.iter_mut().enumerate() {
            m.meta.position = Some(10 + i as u64);
        }
        let (mut source, position) =
            TrackSettled::new(MemorySource::new(messages, Journal::default()));
        let mut out = Vec::new();
        while out.len() < 6 {
            source.recv(&mut out, 6).await.unwrap();
        }
        let acker = source.acker();
        acker.settle(vec![
            settled(&out[1], Settlement::Ack),
            settled(&out[2], Settlement::Ack),
        ]);
        assert_eq!(position.get(), None, "10 is not settled");
        acker.settle(vec![settled(&out[0], Settlement::Ack)]);
        assert_eq!(position.get(), Some(12));
        // A delayed retry gives 13 back to the broker: the prefix cannot pass it this run.
        let retry = Settlement::Retry {
            next_attempt: 2,
            delay: Duration::from_millis(1),
            failure: Failure::unavailable("down"),
        };
        acker.settle(vec![settled(&out[3], retry)]);
        acker.settle(vec![
            settled(&out[4], Settlement::Ack),
            settled(&out[5], Settlement::Ack),
        ]);
        assert_eq!(position.get(), Some(12));
    }

    #[tokio::test]
    async fn too_many_deliveries_behind_an_unsettled_one_stop_tracking_for_the_run() {
        let mut messages: Vec<Message> = numbered_messages(6, 2);
        for (i, m) in messages.iter_mut().enumerate() {
            m.meta.position = Some(10 + i as u64);
        }
        let (mut source, position) =
            TrackSettled::tracking_at_most(MemorySource::new(messages, Journal::default()), 3);
        let mut out = Vec::new();
        while out.len() < 2 {
            source.recv(&mut out, 2).await.unwrap();
        }
        let acker = source.acker();
        acker.settle(vec![settled(&out[0], Settlement::Ack)]);
        assert_eq!(position.get(), Some(10));
        // 11 stays unsettled while four more arrive: more than 3 wait, tracking stops.
        while out.len() < 6 {
            source.recv(&mut out, 6).await.unwrap();
        }
        let rest = out[1..].iter().map(|d| settled(d, Settlement::Ack));
        acker.settle(rest.collect());
        assert_eq!(position.get(), Some(10), "stopped for the rest of the run");
    }
}
