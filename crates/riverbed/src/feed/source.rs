//! The source wrapper: takes the feed's control messages (alives, `snapshot_complete`) out of
//! the stream for the tracker, and finds which good alives may be stored: those whose earlier
//! deliveries are all settled (committed by every sink, or dead-lettered), so a restart that
//! recovers from a stored alive misses nothing.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use async_trait::async_trait;
use riverbed_core::{
    AckToken, Acker, Capabilities, ContiguousTracker, DeadLetter, DeadLetterRoute, DeadLetterSink,
    Delivery, Message, Settled, Settlement, Source, SourceError,
};
use serde_json::Value;

use super::{Messages, Shared};

/// The deliveries of this run in delivery order, each with the count of good alives seen up
/// to it: when the settled prefix reaches a delivery, the good alives counted so far are safe.
#[derive(Default)]
struct Order {
    tracker: ContiguousTracker<u64>,
    seqs: HashMap<AckToken, (u64, u64)>,
    /// Good alives not yet passed by the prefix: (count, producer, timestamp).
    pending: VecDeque<(u64, String, u64)>,
    good: u64,
    /// A delivery was given back (requeued): the prefix cannot pass it in this run.
    frozen: bool,
}

/// Settles through the source's acker, after noting which deliveries are done.
struct FeedAcker {
    inner: Arc<dyn Acker>,
    order: Arc<Mutex<Order>>,
    shared: Arc<Shared>,
}

impl Acker for FeedAcker {
    fn settle(&self, settled: Vec<Settled>) {
        self.track(&settled);
        self.inner.settle(settled);
    }
}

impl FeedAcker {
    fn track(&self, settled: &[Settled]) {
        let mut o = self.order.lock().expect("feed order lock");
        if o.frozen {
            return;
        }
        for s in settled {
            let Some((seq, good)) = o.seqs.remove(&s.token) else {
                continue;
            };
            if let Settlement::Ack = s.settlement {
                o.tracker.complete(seq, good);
            } else {
                tracing::warn!(
                    "A delivery was given back to the broker; the stored alive timestamps stop advancing for this run (a restart recovers from the last one stored)"
                );
                *o = Order {
                    frozen: true,
                    ..Order::default()
                };
                return;
            }
        }
        let Some(good) = o.tracker.advance() else {
            return;
        };
        let mut safe = self.shared.safe.lock().expect("feed safe lock");
        while o.pending.front().is_some_and(|(n, _, _)| *n <= good) {
            let (_, producer, ts) = o.pending.pop_front().expect("checked");
            let e = safe.entry(producer).or_insert(ts);
            *e = (*e).max(ts);
        }
        drop(safe);
        self.shared.wake.notify_one();
    }
}

/// A control message of the feed.
#[derive(Debug, PartialEq)]
enum Control {
    Alive {
        producer: String,
        subscribed: bool,
        timestamp: u64,
    },
    Snapshot {
        producer: String,
        request_id: u64,
    },
    Malformed(String),
}

fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn number(v: Option<&Value>) -> Option<u64> {
    match v? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        Value::Bool(b) => Some(u64::from(*b)),
        _ => None,
    }
}

/// What `msg` is for the tracker; `None` for data (and for what is not JSON: the pipeline
/// dead-letters that).
fn classify(msg: &mut Message, m: &Messages) -> Option<Control> {
    let body = msg.decoded().ok()?;
    let kind = body.pointer(&m.type_field)?.as_str()?;
    let is_alive = kind == m.alive;
    if !is_alive && kind != m.snapshot_complete {
        return None;
    }
    let Some(producer) = text(body.pointer(&m.producer)) else {
        return Some(Control::Malformed(format!(
            "{kind} without a producer at {}",
            m.producer
        )));
    };
    if is_alive {
        let (Some(timestamp), Some(subscribed)) = (
            number(body.pointer(&m.timestamp)),
            number(body.pointer(&m.subscribed)),
        ) else {
            return Some(Control::Malformed(format!(
                "alive without a number at {} and {}",
                m.timestamp, m.subscribed
            )));
        };
        return Some(Control::Alive {
            producer,
            subscribed: subscribed != 0,
            timestamp,
        });
    }
    match number(body.pointer(&m.request_id)) {
        Some(request_id) => Some(Control::Snapshot {
            producer,
            request_id,
        }),
        None => Some(Control::Malformed(format!(
            "snapshot_complete without a request id at {}",
            m.request_id
        ))),
    }
}

/// A source whose feed control messages go to the tracker instead of the pipeline.
pub struct FeedSource<S> {
    inner: S,
    acker: Arc<FeedAcker>,
    shared: Arc<Shared>,
    messages: Arc<Messages>,
    route: Option<DeadLetterRoute>,
}

impl<S: Source> FeedSource<S> {
    /// Wraps `inner`, whose sessions `shared` counts.
    pub fn new(inner: S, shared: Arc<Shared>, messages: Arc<Messages>) -> Self {
        let acker = Arc::new(FeedAcker {
            inner: inner.acker(),
            order: Arc::default(),
            shared: shared.clone(),
        });
        FeedSource {
            inner,
            acker,
            shared,
            messages,
            route: None,
        }
    }

    /// Registers the new deliveries in order, hands control messages to the tracker and
    /// settles them; data stays in `out`.
    fn sort(&mut self, out: &mut Vec<Delivery>, start: usize) {
        let now = Instant::now();
        let mut tracker = self.shared.tracker.lock().expect("feed tracker lock");
        tracker.sessions((self.shared.sessions)(), now);
        let mut order = self.acker.order.lock().expect("feed order lock");
        let mut done = Vec::new();
        let mut kept = Vec::with_capacity(out.len() - start);
        for mut d in out.drain(start..) {
            let control = classify(&mut d.message, &self.messages);
            match &control {
                Some(Control::Alive {
                    producer,
                    subscribed,
                    timestamp,
                }) => {
                    if tracker.alive(producer, *subscribed, now) && !order.frozen {
                        order.good += 1;
                        let n = order.good;
                        order.pending.push_back((n, producer.clone(), *timestamp));
                    }
                }
                Some(Control::Snapshot {
                    producer,
                    request_id,
                }) => {
                    tracker.snapshot_complete(producer, *request_id, now);
                }
                Some(Control::Malformed(_)) | None => {}
            }
            if !order.frozen {
                let seq = order.tracker.register();
                let good = order.good;
                order.seqs.insert(d.token, (seq, good));
            }
            match control {
                None => kept.push(d),
                Some(Control::Malformed(why)) => self.dead_letter(d, why),
                Some(_) => done.push(Settled {
                    token: d.token,
                    settlement: Settlement::Ack,
                    message: None,
                }),
            }
        }
        drop((order, tracker));
        out.extend(kept);
        if !done.is_empty() {
            self.acker.settle(done);
        }
        self.shared.wake.notify_one();
    }

    /// Stores a malformed control message as a dead letter, then settles it.
    fn dead_letter(&self, d: Delivery, why: String) {
        let now = SystemTime::now();
        let letter = DeadLetter {
            message: d.message,
            reason: "malformed_control".into(),
            error: why,
            attempts: 1,
            first_failure: now,
            last_failure: now,
            stage: "feed".into(),
        };
        let acker = self.acker.clone();
        let route = self.route.clone();
        tokio::spawn(async move {
            if let Some(route) = route {
                let mut backoff = riverbed_core::Backoff::new(
                    std::time::Duration::from_millis(50),
                    std::time::Duration::from_secs(5),
                );
                while route.store(std::slice::from_ref(&letter)).await.is_err() {
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
            acker.settle(vec![Settled {
                token: d.token,
                settlement: Settlement::Ack,
                message: None,
            }]);
        });
    }
}

#[async_trait]
impl<S: Source> Source for FeedSource<S> {
    fn describe(&self) -> String {
        format!("{} (feed producers tracked)", self.inner.describe())
    }

    async fn recv(&mut self, out: &mut Vec<Delivery>, max: usize) -> Result<bool, SourceError> {
        loop {
            let start = out.len();
            let more = self.inner.recv(out, max).await?;
            self.sort(out, start);
            if out.len() > start || !more {
                return Ok(more);
            }
        }
    }

    fn acker(&self) -> Arc<dyn Acker> {
        self.acker.clone()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn dead_letters(&self) -> Option<Arc<dyn DeadLetterSink>> {
        self.inner.dead_letters()
    }

    fn route_dead_letters(&mut self, route: DeadLetterRoute) {
        self.route = Some(route.clone());
        self.inner.route_dead_letters(route);
    }

    async fn close(&mut self) -> Result<(), SourceError> {
        self.inner.close().await
    }
}

#[cfg(test)]
#[path = "source_tests.rs"]
mod tests;
