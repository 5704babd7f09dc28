//! The source's acker: coalesces acknowledgements into cumulative `basic.ack` frames sent on a
//! short timer (or at once when many are due), sends nacks one by one ahead of them, and hands
//! broker retries to the retry worker. Settlements of a channel that has gone are dropped: the
//! broker redelivers those messages, and an ack never reaches a channel that did not deliver.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use riverbed_core::{Acker, Delivery, Settled, Settlement};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;

use crate::delivery::Received;
use crate::retry::RetryJob;
use crate::status::SourceStatus;
use crate::window::{Window, split, token};

mod channel;
#[cfg(test)]
mod tests;

pub(crate) use channel::AckChannel;

/// The live channel and its deliveries.
struct Generation {
    id: u32,
    channel: Arc<dyn AckChannel>,
    window: Window,
}

#[derive(Default)]
struct AckState {
    current: Option<Generation>,
    /// Highest stream offset whose deliveries, and all before it, are settled.
    settled_offset: Option<u64>,
    /// The first stream offset ever received (where to resume if nothing settled yet).
    first_offset: Option<u64>,
    /// Lowest stream offset given back with `Requeue`: resuming must not pass it.
    requeue_floor: Option<u64>,
}

/// Shared between the source, the flusher task, the retry worker and the pipeline.
pub(crate) struct AckShared {
    state: Mutex<AckState>,
    /// Serialises flushes, so cumulative acks leave in increasing order.
    send: tokio::sync::Mutex<()>,
    work: Arc<Notify>,
    urgent: Arc<Notify>,
    urgent_after: usize,
    is_stream: bool,
    retry: Option<mpsc::UnboundedSender<RetryJob>>,
    retries_in_flight: AtomicUsize,
    retries_done: Notify,
    /// Turns true when the source closes: the retry worker stops holding failed retries.
    closing: watch::Sender<bool>,
    pub status: Arc<SourceStatus>,
}

impl AckShared {
    /// An acker that flushes at once when `urgent_after` completions wait.
    pub fn new(
        urgent_after: usize,
        is_stream: bool,
        retry: Option<mpsc::UnboundedSender<RetryJob>>,
        status: Arc<SourceStatus>,
    ) -> Self {
        AckShared {
            state: Mutex::new(AckState::default()),
            send: tokio::sync::Mutex::new(()),
            work: Arc::new(Notify::new()),
            urgent: Arc::new(Notify::new()),
            urgent_after: urgent_after.max(1),
            is_stream,
            retry,
            retries_in_flight: AtomicUsize::new(0),
            retries_done: Notify::new(),
            closing: watch::Sender::new(false),
            status,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AckState> {
        self.state.lock().expect("acker lock poisoned")
    }

    /// Starts the task that sends acknowledgements every `interval` (at most).
    pub fn spawn_flusher(self: &Arc<Self>, interval: Duration) -> JoinHandle<()> {
        let weak: Weak<AckShared> = Arc::downgrade(self);
        let (work, urgent) = (self.work.clone(), self.urgent.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = work.notified() => tokio::select! {
                        _ = tokio::time::sleep(interval) => {}
                        _ = urgent.notified() => {}
                    },
                    _ = urgent.notified() => {}
                }
                let Some(shared) = weak.upgrade() else { return };
                shared.flush().await;
            }
        })
    }

    /// Makes `channel` the live one, as generation `id`.
    pub fn install(&self, id: u32, channel: Arc<dyn AckChannel>) {
        let mut st = self.lock();
        st.current = Some(Generation {
            id,
            channel,
            window: Window::new(),
        });
    }

    /// Sends what can still be sent on the current channel, then forgets it: later settlements
    /// of its deliveries are dropped.
    pub async fn retire(&self) {
        self.flush().await;
        let _send = self.send.lock().await;
        let mut st = self.lock();
        if let Some(mut g) = st.current.take() {
            let f = g.window.take_flush();
            if let Some(o) = f.settled_offset {
                st.settled_offset = Some(st.settled_offset.map_or(o, |s| s.max(o)));
            }
        }
    }

    /// Registers deliveries of generation `id` in delivery order and appends them to `out`.
    /// Stream messages before `floor` (a chunk starts before the offset asked for) are
    /// acknowledged at once instead. Deliveries of a generation no longer live are dropped.
    pub fn register(
        &self,
        id: u32,
        received: impl Iterator<Item = Received>,
        floor: Option<u64>,
        out: &mut Vec<Delivery>,
    ) {
        let mut st = self.lock();
        let st = &mut *st;
        let Some(g) = st.current.as_mut().filter(|g| g.id == id) else {
            // Cannot happen: a session registers only while it is the live generation. The
            // deliveries stay unacknowledged and return to the queue with their channel.
            tracing::error!(generation = id, "Deliveries of a retired channel dropped");
            return;
        };
        let mut skipped = false;
        for r in received {
            let seq = g.window.register(r.tag, r.offset);
            if let (Some(o), Some(f)) = (r.offset, floor)
                && o < f
            {
                g.window.ack(seq);
                skipped = true;
                continue;
            }
            if let (None, Some(o)) = (st.first_offset, r.offset) {
                st.first_offset = Some(o);
            }
            out.push(Delivery {
                message: r.message,
                token: token(id, seq),
            });
        }
        if skipped {
            self.work.notify_one();
        }
    }

    /// Where a stream consumer resumes: after the settled prefix, else at the first offset
    /// received, never past a requeued offset. `None` when nothing was received yet.
    pub fn resume_offset(&self) -> Option<u64> {
        let st = self.lock();
        let resume = st.settled_offset.map(|o| o + 1).or(st.first_offset)?;
        Some(st.requeue_floor.map_or(resume, |f| f.min(resume)))
    }

    /// Pretends everything up to `offset` was settled (an offset stored with the sink's data).
    pub fn resume_after(&self, offset: u64) {
        let mut st = self.lock();
        st.settled_offset = Some(offset);
        st.first_offset = None;
        st.requeue_floor = None;
    }

    /// Clears the requeue floor once a session resumed from it.
    pub fn resumed(&self) {
        self.lock().requeue_floor = None;
    }

    /// Whether generation `id` is the live one, whose deliveries can still be settled.
    pub fn is_live(&self, id: u32) -> bool {
        self.lock().current.as_ref().is_some_and(|g| g.id == id)
    }

    /// Tells the retry worker the source is closing: retries that fail are requeued at once.
    pub fn begin_close(&self) {
        self.closing.send_replace(true);
    }

    /// Turns true once the source is closing.
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// A retried delivery's republish finished: acknowledge it, or requeue it (when the source
    /// closes before the broker took the retry).
    pub fn retry_done(&self, id: u32, seq: u64, published: bool) {
        {
            let mut st = self.lock();
            if let Some(g) = st.current.as_mut().filter(|g| g.id == id) {
                if published {
                    g.window.ack(seq);
                } else {
                    g.window.nack(seq, true);
                }
            } else {
                drop(st);
                self.status.record_stale(1);
            }
        }
        if published {
            self.work.notify_one();
        } else {
            self.urgent.notify_one();
        }
        if self.retries_in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.retries_done.notify_waiters();
        }
    }

    /// Waits (at most `limit`) until no retried delivery waits for its republish.
    pub async fn wait_for_retries(&self, limit: Duration) {
        let wait = async {
            loop {
                let done = self.retries_done.notified();
                if self.retries_in_flight.load(Ordering::Acquire) == 0 {
                    return;
                }
                done.await;
            }
        };
        let _ = tokio::time::timeout(limit, wait).await;
    }

    /// Sends the nacks and the cumulative ack that are due.
    pub async fn flush(&self) {
        let _send = self.send.lock().await;
        let (channel, f) = {
            let mut st = self.lock();
            let st = &mut *st;
            let Some(g) = st.current.as_mut() else { return };
            let f = g.window.take_flush();
            if let Some(o) = f.settled_offset {
                st.settled_offset = Some(st.settled_offset.map_or(o, |s| s.max(o)));
            }
            (g.channel.clone(), f)
        };
        for (tag, requeue) in f.nacks {
            match channel.nack(tag, requeue).await {
                Ok(()) => self.status.record_nack(),
                Err(e) => tracing::debug!(error = %e, tag, "Nack not sent; the broker redelivers"),
            }
        }
        if let Some((tag, covered)) = f.ack {
            match channel.ack_up_to(tag).await {
                Ok(()) => self.status.record_ack(covered),
                Err(e) => tracing::debug!(error = %e, tag, "Ack not sent; the broker redelivers"),
            }
        }
        for tag in f.acks {
            match channel.ack_one(tag).await {
                Ok(()) => self.status.record_ack(1),
                Err(e) => tracing::debug!(error = %e, tag, "Ack not sent; the broker redelivers"),
            }
        }
    }

    fn requeue(&self, g: &mut Generation, seq: u64, floor: &mut Option<u64>) {
        if self.is_stream {
            // Streams keep every message and refuse nacks: acknowledge for credit, and make
            // sure the next session resumes no later than this offset.
            if let Some(o) = g.window.offset(seq) {
                *floor = Some(floor.map_or(o, |f| f.min(o)));
            }
            g.window.ack(seq);
        } else {
            g.window.nack(seq, true);
        }
    }
}

impl Acker for AckShared {
    fn settle(&self, settled: Vec<Settled>) {
        let mut urgent = false;
        let mut stale = 0;
        let mut jobs = Vec::new();
        {
            let mut st = self.lock();
            let st = &mut *st;
            for s in settled {
                let (id, seq) = split(s.token);
                let Some(g) = st.current.as_mut().filter(|g| g.id == id) else {
                    stale += 1;
                    continue;
                };
                match (s.settlement, s.message, &self.retry) {
                    (Settlement::Ack, _, _) => {
                        g.window.ack(seq);
                    }
                    (
                        Settlement::Retry {
                            next_attempt,
                            delay,
                            failure,
                        },
                        Some(message),
                        Some(_),
                    ) => {
                        jobs.push(RetryJob {
                            generation: id,
                            seq,
                            message,
                            next_attempt,
                            delay,
                            failure,
                            held_since: None,
                        });
                    }
                    (settlement, _, _) => {
                        if matches!(settlement, Settlement::Retry { .. }) {
                            tracing::warn!(
                                "Broker retry asked of a source without retry queues; requeueing"
                            );
                        }
                        self.requeue(g, seq, &mut st.requeue_floor);
                        urgent = true;
                    }
                }
            }
            if let Some(g) = &st.current {
                urgent |= g.window.completed >= self.urgent_after;
            }
        }
        if stale > 0 {
            self.status.record_stale(stale);
            tracing::debug!(
                settlements = stale,
                "Settlements for a closed channel dropped; the broker redelivers"
            );
        }
        if !jobs.is_empty() {
            let sender = self
                .retry
                .as_ref()
                .expect("jobs exist only with a retry worker");
            self.retries_in_flight
                .fetch_add(jobs.len(), Ordering::AcqRel);
            for job in jobs {
                let (id, seq) = (job.generation, job.seq);
                if sender.send(job).is_err() {
                    self.retry_done(id, seq, false);
                }
            }
        }
        if urgent {
            self.urgent.notify_one();
        } else {
            self.work.notify_one();
        }
    }
}
