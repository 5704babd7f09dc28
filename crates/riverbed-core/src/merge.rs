//! [`MergedSource`]: several sources consumed as one, which can join while it runs.
//!
//! Made for partitions an instance acquires one by one (a lease per partition): each partition
//! is a source of its own (a durable consumer), started when its lease is won. Every joined
//! source is pumped by a task of its own into one bounded channel, so a slow or reconnecting
//! source never holds the others up, and its tokens are tagged with its index so settlements
//! reach the acker of the source that delivered them.

use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::dead_letter::{DeadLetterRoute, DeadLetterSink};
use crate::source::{AckToken, Acker, Capabilities, Delivery, Settled, Source, SourceError};

/// Bits of a merged token that hold the joined source's index.
const INDEX_BITS: u32 = 8;
const INNER_BITS: u32 = 64 - INDEX_BITS;
const INNER_MASK: u64 = (1 << INNER_BITS) - 1;
/// How many sources can join one merged source.
pub const MAX_JOINED: usize = 1 << INDEX_BITS;
/// Deliveries one pump takes from its source at a time.
const PUMP_BATCH: usize = 256;

type Batch = Result<Vec<Delivery>, SourceError>;

/// Adds sources to a running [`MergedSource`].
#[derive(Clone)]
pub struct Joiner(mpsc::UnboundedSender<Box<dyn Source>>);

impl Joiner {
    /// Starts consuming `source` beside the others. False once the merged source is closed
    /// (the source is dropped unconsumed).
    pub fn join(&self, source: Box<dyn Source>) -> bool {
        self.0.send(source).is_ok()
    }
}

/// Several sources as one; see the module documentation.
pub struct MergedSource {
    describe: String,
    capabilities: Capabilities,
    dead_letters: Option<Arc<dyn DeadLetterSink>>,
    route: Option<DeadLetterRoute>,
    joins: mpsc::UnboundedReceiver<Box<dyn Source>>,
    batches: mpsc::Receiver<Batch>,
    sender: mpsc::Sender<Batch>,
    /// Deliveries of a pumped batch beyond what the last `recv` could take.
    pending: std::collections::VecDeque<Delivery>,
    acker: Arc<MergedAcker>,
    stop: CancellationToken,
    pumps: Vec<JoinHandle<()>>,
}

impl MergedSource {
    /// A merged source with nothing joined yet, and the handle that joins sources to it.
    /// `capabilities` and `dead_letters` are what the pipeline sees: the joined sources'
    /// own are not known when the pipeline is built.
    pub fn new(
        describe: String,
        capabilities: Capabilities,
        dead_letters: Option<Arc<dyn DeadLetterSink>>,
    ) -> (Self, Joiner) {
        let (join_tx, joins) = mpsc::unbounded_channel();
        let (sender, batches) = mpsc::channel(4);
        let source = MergedSource {
            describe,
            capabilities,
            dead_letters,
            route: None,
            joins,
            batches,
            sender,
            pending: std::collections::VecDeque::new(),
            acker: Arc::new(MergedAcker::default()),
            stop: CancellationToken::new(),
            pumps: Vec::new(),
        };
        (source, Joiner(join_tx))
    }

    fn start(&mut self, mut source: Box<dyn Source>) -> Result<(), SourceError> {
        let index = {
            let mut ackers = self.acker.ackers.write().expect("acker lock");
            if ackers.len() >= MAX_JOINED {
                return Err(SourceError::Config(format!(
                    "at most {MAX_JOINED} sources can be merged"
                )));
            }
            ackers.push(source.acker());
            (ackers.len() - 1) as u64
        };
        if let Some(route) = &self.route {
            source.route_dead_letters(route.clone());
        }
        tracing::info!(source = %source.describe(), "Consuming a joined source");
        let (sender, stop) = (self.sender.clone(), self.stop.clone());
        self.pumps.push(tokio::spawn(async move {
            let mut buf = Vec::new();
            loop {
                let got = tokio::select! {
                    _ = stop.cancelled() => break,
                    got = source.recv(&mut buf, PUMP_BATCH) => got,
                };
                match got {
                    Ok(more) => {
                        let batch: Vec<Delivery> = buf
                            .drain(..)
                            .map(|mut d| {
                                d.token = (index << INNER_BITS) | (d.token & INNER_MASK);
                                d
                            })
                            .collect();
                        if !batch.is_empty() && sender.send(Ok(batch)).await.is_err() {
                            break;
                        }
                        if !more {
                            tracing::info!(source = %source.describe(), "Joined source ended");
                            break;
                        }
                    }
                    Err(e) => {
                        let _ = sender.send(Err(e)).await;
                        break;
                    }
                }
            }
            if let Err(e) = source.close().await {
                tracing::warn!(source = %source.describe(), error = %e, "Closing a joined source");
            }
        }));
        Ok(())
    }
}

#[async_trait]
impl Source for MergedSource {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    async fn recv(&mut self, out: &mut Vec<Delivery>, max: usize) -> Result<bool, SourceError> {
        while self.pending.is_empty() {
            tokio::select! {
                Some(source) = self.joins.recv() => self.start(source)?,
                // Moved into `pending` before any other await: cancel-safe.
                Some(batch) = self.batches.recv() => self.pending.extend(batch?),
                // Nothing can join any more and nothing is pumped: nothing will come.
                else => std::future::pending::<()>().await,
            }
        }
        let n = self.pending.len().min(max.max(1));
        out.extend(self.pending.drain(..n));
        Ok(true)
    }

    fn acker(&self) -> Arc<dyn Acker> {
        self.acker.clone()
    }

    fn capabilities(&self) -> Capabilities {
        self.capabilities
    }

    fn dead_letters(&self) -> Option<Arc<dyn DeadLetterSink>> {
        self.dead_letters.clone()
    }

    fn route_dead_letters(&mut self, route: DeadLetterRoute) {
        self.route = Some(route);
    }

    /// Stops the pumps; each closes its source (which sends its last acks).
    async fn close(&mut self) -> Result<(), SourceError> {
        self.joins.close();
        self.stop.cancel();
        self.batches.close();
        for pump in self.pumps.drain(..) {
            let _ = pump.await;
        }
        Ok(())
    }
}

/// Routes each settlement to the acker of the source that delivered it.
#[derive(Default)]
struct MergedAcker {
    ackers: RwLock<Vec<Arc<dyn Acker>>>,
}

impl Acker for MergedAcker {
    fn settle(&self, settled: Vec<Settled>) {
        let ackers = self.ackers.read().expect("acker lock").clone();
        let mut per: Vec<Vec<Settled>> = vec![Vec::new(); ackers.len()];
        for mut s in settled {
            let index = (s.token >> INNER_BITS) as usize;
            s.token &= INNER_MASK as AckToken;
            match per.get_mut(index) {
                Some(group) => group.push(s),
                None => tracing::error!(index, "Settlement for no joined source dropped"),
            }
        }
        for (acker, group) in ackers.iter().zip(per) {
            if !group.is_empty() {
                acker.settle(group);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::{Message, Settlement};

    /// Delivers `count` messages named `<name>-<i>` with tokens 1.., as many as asked at once,
    /// then ends.
    struct Counted {
        name: &'static str,
        next: u64,
        count: u64,
        acked: Arc<Mutex<Vec<u64>>>,
    }

    struct Recording(Arc<Mutex<Vec<u64>>>);

    impl Acker for Recording {
        fn settle(&self, settled: Vec<Settled>) {
            self.0
                .lock()
                .unwrap()
                .extend(settled.iter().map(|s| s.token));
        }
    }

    #[async_trait]
    impl Source for Counted {
        fn describe(&self) -> String {
            self.name.into()
        }
        async fn recv(&mut self, out: &mut Vec<Delivery>, max: usize) -> Result<bool, SourceError> {
            // Everything left at once (up to `max`): a pumped batch holds several deliveries.
            while self.next < self.count && out.len() < max {
                self.next += 1;
                out.push(Delivery {
                    message: Message::new(format!("{}-{}", self.name, self.next)),
                    token: self.next,
                });
            }
            Ok(self.next < self.count)
        }
        fn acker(&self) -> Arc<dyn Acker> {
            Arc::new(Recording(self.acked.clone()))
        }
    }

    #[tokio::test]
    async fn sources_joined_while_running_are_consumed_and_settled_by_their_own_acker() {
        let (mut merged, joiner) =
            MergedSource::new("merged".into(), Capabilities::default(), None);
        let (a, b) = (
            Arc::new(Mutex::new(Vec::new())),
            Arc::new(Mutex::new(Vec::new())),
        );
        assert!(joiner.join(Box::new(Counted {
            name: "a",
            next: 0,
            count: 3,
            acked: a.clone()
        })));
        let mut out = Vec::new();
        while out.len() < 3 {
            let before = out.len();
            merged.recv(&mut out, 1).await.unwrap();
            assert_eq!(out.len(), before + 1, "recv takes at most `max`");
        }
        assert!(joiner.join(Box::new(Counted {
            name: "b",
            next: 0,
            count: 2,
            acked: b.clone()
        })));
        while out.len() < 5 {
            merged.recv(&mut out, 10).await.unwrap();
        }
        let mut bodies: Vec<String> = out
            .iter()
            .map(|d| String::from_utf8(d.message.payload.to_vec()).unwrap())
            .collect();
        bodies.sort();
        assert_eq!(bodies, ["a-1", "a-2", "a-3", "b-1", "b-2"]);
        let settled = out
            .iter()
            .map(|d| Settled {
                token: d.token,
                settlement: Settlement::Ack,
                message: None,
            })
            .collect();
        merged.acker().settle(settled);
        assert_eq!(*a.lock().unwrap(), [1, 2, 3]);
        assert_eq!(*b.lock().unwrap(), [1, 2]);
        merged.close().await.unwrap();
        assert!(!joiner.join(Box::new(Counted {
            name: "c",
            next: 0,
            count: 1,
            acked: a
        })));
    }
}
