//! In-memory source, sink and dead-letter destination that record everything in one journal,
//! so tests can check what was committed, acknowledged and dead-lettered, and in which order.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::Notify;

use crate::dead_letter::DeadLetterSink;
use crate::message::Message;
use crate::outcome::{DeadLetter, Failure, Outcome, Settlement};
use crate::sink::{BatchOutcome, Sink};
use crate::source::{Acker, Capabilities, Delivery, Settled, Source, SourceError};

mod outage;
mod pki;
mod postgres_tls;
mod rabbitmq_cluster;
mod servers;
mod service;

pub use outage::{
    ComesBack, ensure_redis_up, restart_redis_losing_data, stop_postgres, stop_redis_keeping_data,
};
pub use pki::{Pki, ScratchDir};
pub use postgres_tls::postgres_tls;
pub use rabbitmq_cluster::{RabbitCluster, rabbitmq_cluster, rabbitmq_cluster_named};
pub use servers::{TestServer, nats_server, rabbitmq_tls, redis_tls, require_program};
pub use service::{ServiceLock, lock_service, require_service};

/// One thing that happened, in the order it happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A sink committed a message (identified by its `message_id`).
    Commit {
        /// The sink.
        sink: String,
        /// The message id.
        id: String,
        /// The message key.
        key: Option<String>,
    },
    /// The source settled a delivery.
    Settle {
        /// The message id of the delivery.
        id: String,
        /// How.
        settlement: Settlement,
    },
    /// A dead letter was stored.
    DeadLetter {
        /// The message id.
        id: String,
        /// The reason.
        reason: String,
    },
}

/// The shared record of events.
#[derive(Debug, Default, Clone)]
pub struct Journal(Arc<Mutex<Vec<Event>>>);

impl Journal {
    /// Appends an event.
    pub fn push(&self, e: Event) {
        self.0.lock().expect("journal lock").push(e);
    }

    /// A copy of every event so far.
    pub fn events(&self) -> Vec<Event> {
        self.0.lock().expect("journal lock").clone()
    }
}

struct SourceState {
    queue: VecDeque<Message>,
    delivered: Vec<Message>,
    settled: usize,
    /// Retried messages waiting out their delay.
    returning: usize,
}

/// A source that delivers a fixed list of messages (each needs a `message_id`), then either
/// ends or stays open. With delayed retry on, a retried message is queued again with its
/// attempt increased, as a broker's retry queue would.
pub struct MemorySource {
    state: Arc<Mutex<SourceState>>,
    acker: Arc<MemoryAcker>,
    keep_open: bool,
    delayed_retry: bool,
}

/// The acker of a [`MemorySource`].
pub struct MemoryAcker {
    state: Arc<Mutex<SourceState>>,
    journal: Journal,
    notify: Arc<Notify>,
}

impl MemorySource {
    /// A source delivering `messages` in order, recording settlements in `journal`.
    pub fn new(messages: Vec<Message>, journal: Journal) -> Self {
        let state = Arc::new(Mutex::new(SourceState {
            queue: messages.into(),
            delivered: Vec::new(),
            settled: 0,
            returning: 0,
        }));
        MemorySource {
            acker: Arc::new(MemoryAcker {
                state: state.clone(),
                journal,
                notify: Arc::new(Notify::new()),
            }),
            state,
            keep_open: false,
            delayed_retry: false,
        }
    }

    /// Keep waiting for messages after the list ran out (until the pipeline is stopped).
    pub fn keep_open(mut self) -> Self {
        self.keep_open = true;
        self
    }

    /// Accept broker-style delayed retries.
    pub fn with_delayed_retry(mut self) -> Self {
        self.delayed_retry = true;
        self
    }
}

impl Acker for MemoryAcker {
    fn settle(&self, settled: Vec<Settled>) {
        let mut st = self.state.lock().expect("source lock");
        st.settled += settled.len();
        for s in settled {
            let original = &st.delivered[s.token as usize];
            let id = original.meta.message_id.clone().unwrap_or_default();
            if let Settlement::Retry {
                next_attempt,
                delay,
                ..
            } = &s.settlement
            {
                let mut again = s.message.clone().expect("a retry carries its message");
                again.meta.attempt = *next_attempt;
                again.meta.redelivered = true;
                // Like a broker's TTL queue: the message comes back after its delay.
                let (state, notify, delay) = (self.state.clone(), self.notify.clone(), *delay);
                st.returning += 1;
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let mut st = state.lock().expect("source lock");
                    st.returning -= 1;
                    st.queue.push_back(again);
                    drop(st);
                    notify.notify_one();
                });
            }
            self.journal.push(Event::Settle {
                id,
                settlement: s.settlement,
            });
        }
        drop(st);
        self.notify.notify_one();
    }
}

#[async_trait]
impl Source for MemorySource {
    fn describe(&self) -> String {
        "memory source".into()
    }

    async fn recv(&mut self, out: &mut Vec<Delivery>, max: usize) -> Result<bool, SourceError> {
        loop {
            let notified = self.acker.notify.notified();
            {
                let mut st = self.state.lock().expect("source lock");
                while out.len() < max {
                    let Some(m) = st.queue.pop_front() else { break };
                    let token = st.delivered.len() as u64;
                    st.delivered.push(m.clone());
                    out.push(Delivery { message: m, token });
                }
                if !out.is_empty() {
                    return Ok(true);
                }
                // A delayed retry may still come back while deliveries are unsettled.
                let unsettled =
                    self.delayed_retry && (st.settled < st.delivered.len() || st.returning > 0);
                if !self.keep_open && !unsettled {
                    return Ok(false);
                }
            }
            notified.await;
        }
    }

    fn acker(&self) -> Arc<dyn Acker> {
        self.acker.clone()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            delayed_retry: self.delayed_retry,
            window: None,
        }
    }
}

type FailFn = dyn Fn(&Message, u32) -> Outcome + Send + Sync;

/// A sink that commits into the journal, failing where its rule says so. The rule sees the
/// message and how many times this sink has been asked to write it (1 on the first write).
pub struct MemorySink {
    name: String,
    journal: Journal,
    rule: Box<FailFn>,
    attempts: Mutex<std::collections::HashMap<String, u32>>,
    partial: bool,
}

impl MemorySink {
    /// A sink that commits everything.
    pub fn new(name: &str, journal: Journal) -> Self {
        Self::failing(name, journal, |_, _| Outcome::Ok)
    }

    /// A sink that fails per `rule`. A transient failure of one message fails the rest of its
    /// batch transiently too (a rolled-back transaction), as the [`Sink`] contract asks.
    pub fn failing(
        name: &str,
        journal: Journal,
        rule: impl Fn(&Message, u32) -> Outcome + Send + Sync + 'static,
    ) -> Self {
        MemorySink {
            name: name.into(),
            journal,
            rule: Box::new(rule),
            attempts: Mutex::new(Default::default()),
            partial: false,
        }
    }

    /// Commit what can be committed instead of rolling back a batch with a transient failure:
    /// a transient failure fails only its message and the later messages of its key in the
    /// batch (the least the [`Sink`] contract allows), as a sink writing per key would.
    pub fn partial(mut self) -> Self {
        self.partial = true;
        self
    }

    /// Per-key partial outcomes: a transient failure spreads to the later messages of its key.
    fn spread_per_key(batch: &[Message], outcomes: &mut [Outcome]) {
        let mut failed: std::collections::HashMap<Option<&str>, Outcome> = Default::default();
        for (m, o) in batch.iter().zip(outcomes.iter_mut()) {
            let key = m.key.as_deref();
            if let Some(f) = failed.get(&key) {
                *o = f.clone();
            } else if matches!(o, Outcome::Transient(_) | Outcome::Unavailable(_)) {
                failed.insert(key, o.clone());
            }
        }
    }
}

#[async_trait]
impl Sink for MemorySink {
    async fn write(&self, batch: &[Message]) -> BatchOutcome {
        let mut outcomes = Vec::with_capacity(batch.len());
        {
            // A rule may panic (tests of panic containment): the counts stay usable.
            let mut attempts = self
                .attempts
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for m in batch {
                let id = m.meta.message_id.clone().unwrap_or_default();
                let n = attempts.entry(id).or_insert(0);
                *n += 1;
                outcomes.push((self.rule)(m, *n));
            }
        }
        if self.partial {
            Self::spread_per_key(batch, &mut outcomes);
        } else if let Some(t) = outcomes
            .iter()
            .find(|o| matches!(o, Outcome::Transient(_) | Outcome::Unavailable(_)))
            .cloned()
        {
            return BatchOutcome::All(t);
        }
        for (m, o) in batch.iter().zip(&outcomes) {
            if o.is_ok() {
                self.journal.push(Event::Commit {
                    sink: self.name.clone(),
                    id: m.meta.message_id.clone().unwrap_or_default(),
                    key: m.key.clone(),
                });
            }
        }
        BatchOutcome::Each(outcomes)
    }
}

/// A dead-letter destination that records into the journal and keeps the letters.
#[derive(Default)]
pub struct MemoryDeadLetters {
    journal: Journal,
    letters: Mutex<Vec<DeadLetter>>,
    fail_first: Mutex<u32>,
}

impl MemoryDeadLetters {
    /// Records into `journal`.
    pub fn new(journal: Journal) -> Self {
        MemoryDeadLetters {
            journal,
            ..Default::default()
        }
    }

    /// Fails the first `n` writes (to test that letters are retried, not lost).
    pub fn failing_first(self, n: u32) -> Self {
        *self.fail_first.lock().expect("lock") = n;
        self
    }

    /// The letters stored so far.
    pub fn letters(&self) -> Vec<DeadLetter> {
        self.letters.lock().expect("letters lock").clone()
    }
}

#[async_trait]
impl DeadLetterSink for MemoryDeadLetters {
    fn describe(&self) -> String {
        "memory dead letters".into()
    }

    async fn write(&self, letters: &[DeadLetter]) -> Result<(), Failure> {
        {
            let mut f = self.fail_first.lock().expect("lock");
            if *f > 0 {
                *f -= 1;
                return Err(Failure::unavailable("dead-letter store down (test)"));
            }
        }
        for l in letters {
            self.journal.push(Event::DeadLetter {
                id: l.message.meta.message_id.clone().unwrap_or_default(),
                reason: l.reason.clone(),
            });
        }
        self.letters
            .lock()
            .expect("letters lock")
            .extend_from_slice(letters);
        Ok(())
    }
}

/// `n` JSON messages `{"id": i, "key": "k{i % keys}", "seq": i}` with message ids `m{i}`.
pub fn numbered_messages(n: usize, keys: usize) -> Vec<Message> {
    (0..n)
        .map(|i| {
            let mut m = Message::new(format!(
                r#"{{"id":{i},"key":"k{}","seq":{i}}}"#,
                i % keys.max(1)
            ));
            m.meta.message_id = Some(format!("m{i}"));
            m
        })
        .collect()
}
