//! Consuming a topic of the embedded log, with its position committed as deliveries settle.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use riverbed_core::{
    Acker, Backoff, DeadLetterSink, Delivery, Message, Settled, Settlement, Source, SourceError,
};
use tokio::sync::{Notify, oneshot, watch};

use crate::dead_letter::LogDeadLetters;
use crate::log::EmbeddedLog;
use crate::writer::Command;

/// How often the committed position is written while messages settle.
const COMMIT_EVERY: Duration = Duration::from_millis(20);
/// How far past a read the stored delivered mark is raised at once, so a read costs a write
/// only every few thousand offsets, also when following the end of a topic. What the mark
/// covers but was not delivered counts as delivered once after a crash (`redelivered`, one
/// delivery too many); a clean close writes the exact mark.
const RESERVE_AHEAD: u64 = 4096;

/// Reads a topic from a consumer's committed position on. Delivery tokens are log offsets.
pub struct LogSource {
    log: EmbeddedLog,
    topic: Arc<str>,
    cursor: u64,
    redelivered_upto: u64,
    /// The delivered mark stored: reads up to it need no write before they are handed out.
    reserved: u64,
    follow: bool,
    poll: Duration,
    offsets: watch::Receiver<u64>,
    acker: Arc<LogAcker>,
    flusher: Option<tokio::task::JoinHandle<()>>,
}

impl LogSource {
    /// A consumer named `consumer` of `topic`, resuming after its committed position.
    /// With `follow`, it waits for new messages at the end; without, it ends there.
    pub async fn open(
        log: &EmbeddedLog,
        topic: &str,
        consumer: &str,
        follow: bool,
    ) -> crate::Result<Self> {
        let pos = log.position(consumer, topic).await?;
        let acker = Arc::new(LogAcker {
            log: log.clone(),
            topic: topic.into(),
            consumer: consumer.into(),
            state: Mutex::new(AckState {
                outstanding: BTreeSet::new(),
                // What this run handed out: the previous run's high-water mark is not, or a
                // settled prefix of the redeliveries would commit past offsets not re-read yet.
                // The stored mark never goes down (the writer keeps the maximum).
                delivered: pos.committed,
                committed: pos.committed,
                written: pos.committed,
            }),
            previous_mark: pos.delivered,
            dirty: Notify::new(),
        });
        let flusher = tokio::spawn(flush_positions(acker.clone()));
        tracing::info!(
            topic,
            consumer,
            committed = pos.committed,
            "Embedded log consumer resumes"
        );
        Ok(LogSource {
            log: log.clone(),
            topic: topic.into(),
            cursor: pos.committed,
            redelivered_upto: pos.delivered,
            reserved: pos.delivered,
            follow,
            poll: Duration::from_millis(100),
            offsets: log.offsets(),
            acker,
            flusher: Some(flusher),
        })
    }
}

impl LogSource {
    /// Makes a read durable before it is handed out (see `crate::deliveries`): a restart then
    /// knows every offset up to `last` was delivered, and how often each redelivered one was.
    /// Stamps each message with its delivery count.
    async fn record_deliveries(
        &mut self,
        messages: &mut [Message],
        last: u64,
    ) -> crate::Result<()> {
        let redelivered: Vec<u64> = messages
            .iter()
            .filter(|m| m.meta.redelivered)
            .filter_map(|m| m.meta.position)
            .collect();
        if redelivered.is_empty() && last <= self.reserved {
            return Ok(());
        }
        let upto = self.reserved.max(last.saturating_add(RESERVE_AHEAD));
        let (reply, rx) = oneshot::channel();
        self.log
            .send(Command::Delivered {
                consumer: self.acker.consumer.clone(),
                topic: self.topic.clone(),
                upto,
                redelivered,
                reply,
            })
            .await?;
        let mut counts = rx.await.map_err(|_| crate::Error::Closed)??.into_iter();
        self.reserved = upto;
        for m in messages.iter_mut().filter(|m| m.meta.redelivered) {
            let n = counts.next().unwrap_or(2);
            m.meta.deliveries = n;
            m.meta.attempt = n;
        }
        Ok(())
    }
}

#[async_trait]
impl Source for LogSource {
    fn describe(&self) -> String {
        format!(
            "embedded log {} topic {}",
            self.log.path().display(),
            self.topic
        )
    }

    async fn recv(&mut self, out: &mut Vec<Delivery>, max: usize) -> Result<bool, SourceError> {
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
        loop {
            self.offsets.mark_unchanged();
            let mut messages = match self
                .log
                .read(&self.topic, self.cursor, max, self.redelivered_upto)
                .await
            {
                Ok(m) => m,
                Err(e) => {
                    tracing::error!(error = %e, topic = %self.topic, "Reading the embedded log failed; retrying");
                    tokio::time::sleep(backoff.next_delay()).await;
                    continue;
                }
            };
            if let Some(last) = messages.last().and_then(|m| m.meta.position) {
                if let Err(e) = self.record_deliveries(&mut messages, last).await {
                    tracing::error!(error = %e, topic = %self.topic, "Recording deliveries in the embedded log failed; retrying");
                    tokio::time::sleep(backoff.next_delay()).await;
                    continue;
                }
                self.cursor = last;
                self.acker
                    .delivered(messages.iter().filter_map(|m| m.meta.position));
                out.extend(messages.into_iter().map(|m| Delivery {
                    token: m.meta.position.expect("log messages have offsets"),
                    message: m,
                }));
                return Ok(true);
            }
            if !self.follow {
                return Ok(false);
            }
            // Appends through this process wake us at once; other processes within `poll`.
            let _ = tokio::time::timeout(self.poll, self.offsets.changed()).await;
        }
    }

    fn acker(&self) -> Arc<dyn Acker> {
        self.acker.clone()
    }

    fn dead_letters(&self) -> Option<Arc<dyn DeadLetterSink>> {
        Some(Arc::new(LogDeadLetters::new(&self.log, &self.topic)))
    }

    async fn close(&mut self) -> Result<(), SourceError> {
        if let Some(f) = self.flusher.take() {
            f.abort();
        }
        self.acker
            .commit(true)
            .await
            .map_err(|e| SourceError::Fatal(format!("committing the final position failed: {e}")))
    }
}

struct AckState {
    /// Delivered offsets not settled yet.
    outstanding: BTreeSet<u64>,
    /// The highest offset handed out in this run.
    delivered: u64,
    /// Everything at or below is settled.
    committed: u64,
    /// The committed position last written.
    written: u64,
}

/// Settles log deliveries: the position is everything below the lowest unsettled offset.
pub struct LogAcker {
    log: EmbeddedLog,
    topic: Arc<str>,
    consumer: Arc<str>,
    state: Mutex<AckState>,
    dirty: Notify,
    /// The delivered mark stored when this run began (exact after a clean close, reserved
    /// ahead after a crash): a final commit never writes less.
    previous_mark: u64,
}

impl LogAcker {
    fn delivered(&self, offsets: impl Iterator<Item = u64>) {
        let mut st = self.state.lock().expect("acker lock");
        for o in offsets {
            st.outstanding.insert(o);
            st.delivered = st.delivered.max(o);
        }
    }

    /// Writes the committed position if it moved; with `wait` (the final commit of a clean
    /// close), until it is durable, with the exact delivered mark instead of one reserved ahead.
    async fn commit(&self, wait: bool) -> crate::Result<()> {
        let (committed, delivered) = {
            let st = self.state.lock().expect("acker lock");
            if st.committed == st.written && !wait {
                return Ok(());
            }
            (st.committed, st.delivered)
        };
        let (reply, rx) = if wait {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        self.log
            .send(Command::Commit {
                consumer: self.consumer.clone(),
                topic: self.topic.clone(),
                committed,
                delivered: if wait {
                    delivered.max(self.previous_mark)
                } else {
                    delivered
                },
                exact: wait,
                reply,
            })
            .await?;
        if let Some(rx) = rx {
            rx.await.map_err(|_| crate::Error::Closed)??;
        }
        let mut st = self.state.lock().expect("acker lock");
        st.written = st.written.max(committed);
        Ok(())
    }
}

impl Acker for LogAcker {
    fn settle(&self, settled: Vec<Settled>) {
        let mut st = self.state.lock().expect("acker lock");
        for s in settled {
            match s.settlement {
                Settlement::Ack => {
                    st.outstanding.remove(&s.token);
                }
                // A log cannot give a message back: it stays unsettled and comes again after a
                // restart. Delayed retry is not offered by this source.
                Settlement::Requeue | Settlement::Retry { .. } => {}
            }
        }
        let committed = match st.outstanding.first() {
            Some(lowest) => lowest - 1,
            None => st.delivered,
        };
        if committed > st.committed {
            st.committed = committed;
            drop(st);
            self.dirty.notify_one();
        }
    }
}

async fn flush_positions(acker: Arc<LogAcker>) {
    loop {
        acker.dirty.notified().await;
        if let Err(e) = acker.commit(false).await {
            tracing::error!(error = %e, "Committing the embedded log position failed");
        }
        tokio::time::sleep(COMMIT_EVERY).await;
    }
}
