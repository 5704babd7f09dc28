//! The source's acker: one explicit acknowledgement per settled delivery, sent from a task;
//! in-progress acks (`+WPI`) for deliveries still unsettled past half of `ack_wait`; `-NAK`
//! (with the retry's delay) for deliveries given back.
//!
//! JetStream acknowledges by reply subject, not by connection: a settlement that arrives after
//! a reconnect or a renewed pull still reaches the server.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::{Client, Subject};
use bytes::Bytes;
use riverbed_core::{Acker, Delivery, Settled, Settlement};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::delivery::Received;
use crate::status::SourceStatus;

/// A delivery handed to the pipeline and not settled yet.
struct Pending {
    reply: Subject,
    stream_sequence: u64,
    /// When the server's ack timer last (re)started for it.
    since: Instant,
}

#[derive(Default)]
struct State {
    next_token: u64,
    pending: HashMap<u64, Pending>,
    /// Deliveries at or before this stream sequence are acknowledged at once (a position
    /// stored with the sink's data).
    skip_through: Option<u64>,
    /// The highest stream sequence delivered so far.
    highest: Option<u64>,
}

enum Job {
    Settle(Vec<Settled>),
    AckNow(Subject),
    Nak(Subject),
    Flush(oneshot::Sender<()>),
}

/// Shared between the source, its ack task and the pipeline.
pub(crate) struct AckShared {
    state: Mutex<State>,
    jobs: mpsc::UnboundedSender<Job>,
    receiver: Mutex<Option<mpsc::UnboundedReceiver<Job>>>,
    ack_wait: Duration,
    status: Arc<SourceStatus>,
}

impl AckShared {
    /// An acker for a consumer with this `ack_wait`.
    pub fn new(ack_wait: Duration, status: Arc<SourceStatus>) -> Self {
        let (jobs, receiver) = mpsc::unbounded_channel();
        AckShared {
            state: Mutex::new(State::default()),
            jobs,
            receiver: Mutex::new(Some(receiver)),
            ack_wait,
            status,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("acker lock poisoned")
    }

    /// Acknowledges without handing over every delivery up to stream sequence `seq`.
    pub fn skip_through(&self, seq: u64) {
        self.lock().skip_through = Some(seq);
    }

    /// Registers a delivery and returns it for the pipeline, or acknowledges it at once when it
    /// is at or before the resume position.
    pub fn register(&self, r: Received) -> Option<Delivery> {
        let mut st = self.lock();
        st.highest = st.highest.max(Some(r.stream_sequence));
        if st.skip_through.is_some_and(|s| r.stream_sequence <= s) {
            self.status.add_skipped();
            let _ = self.jobs.send(Job::AckNow(r.reply));
            return None;
        }
        let token = st.next_token;
        st.next_token += 1;
        st.pending.insert(
            token,
            Pending {
                reply: r.reply,
                stream_sequence: r.stream_sequence,
                since: Instant::now(),
            },
        );
        Some(Delivery {
            message: r.message,
            token,
        })
    }

    /// Where a consumer created anew (the server lost the durable) starts: the lowest
    /// unsettled stream sequence, else right after the highest delivered one; `None` before
    /// the first delivery.
    pub fn resume_point(&self) -> Option<u64> {
        let st = self.lock();
        let unsettled = st.pending.values().map(|p| p.stream_sequence).min();
        unsettled.or(st.highest.map(|h| h + 1))
    }

    /// Starts the task that sends acknowledgements on `client` (once).
    pub fn spawn(self: &Arc<Self>, client: Client) -> Option<JoinHandle<()>> {
        let rx = self.receiver.lock().expect("acker lock poisoned").take()?;
        Some(tokio::spawn(run(Arc::downgrade(self), rx, client)))
    }

    /// Waits (at most `limit`) until every settlement sent so far has left for the server.
    pub async fn flush(&self, limit: Duration) -> bool {
        let (tx, rx) = oneshot::channel();
        if self.jobs.send(Job::Flush(tx)).is_err() {
            return false;
        }
        tokio::time::timeout(limit, rx)
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Gives every unsettled delivery back (`-NAK`): the source is closing and will never
    /// settle them, so the server redelivers them at once instead of after `ack_wait`.
    pub fn give_back_unsettled(&self) -> usize {
        let replies: Vec<Subject> = self.lock().pending.drain().map(|(_, p)| p.reply).collect();
        let n = replies.len();
        for reply in replies {
            let _ = self.jobs.send(Job::Nak(reply));
        }
        n
    }

    /// Takes the reply subjects of these settlements (stale tokens are dropped).
    fn take(&self, settled: Vec<Settled>) -> Vec<(Subject, Settlement)> {
        let mut st = self.lock();
        settled
            .into_iter()
            .filter_map(|s| st.pending.remove(&s.token).map(|p| (p.reply, s.settlement)))
            .collect()
    }

    /// The deliveries whose ack timer passed half of `ack_wait`; their timer restarts now.
    fn due_for_progress(&self) -> Vec<Subject> {
        let now = Instant::now();
        let half = self.ack_wait / 2;
        let mut st = self.lock();
        st.pending
            .values_mut()
            .filter(|p| now.duration_since(p.since) >= half)
            .map(|p| {
                p.since = now;
                p.reply.clone()
            })
            .collect()
    }
}

impl Acker for AckShared {
    fn settle(&self, settled: Vec<Settled>) {
        let _ = self.jobs.send(Job::Settle(settled));
    }
}

/// The ack payload for a settlement.
fn payload(s: &Settlement) -> Bytes {
    match s {
        Settlement::Ack => AckKind::Ack.into(),
        Settlement::Requeue => AckKind::Nak(None).into(),
        Settlement::Retry { delay, .. } => AckKind::Nak(Some(*delay)).into(),
    }
}

async fn send(client: &Client, reply: Subject, payload: Bytes) {
    if let Err(e) = client.publish(reply, payload).await {
        // The server redelivers after `ack_wait`; the sinks absorb the duplicate.
        tracing::warn!(error = %e, "Acknowledgement not sent; the server will redeliver");
    }
}

async fn run(
    shared: std::sync::Weak<AckShared>,
    mut rx: mpsc::UnboundedReceiver<Job>,
    client: Client,
) {
    let Some(ack_wait) = shared.upgrade().map(|s| s.ack_wait) else {
        return;
    };
    let mut tick = tokio::time::interval((ack_wait / 8).max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            job = rx.recv() => {
                let Some(job) = job else { return };
                let Some(shared) = shared.upgrade() else { return };
                handle(&shared, &client, job).await;
            }
            _ = tick.tick() => {
                let Some(shared) = shared.upgrade() else { return };
                let due = shared.due_for_progress();
                if !due.is_empty() {
                    tracing::debug!(deliveries = due.len(), "In-progress acks sent");
                    shared.status.add_progress(due.len() as u64);
                    for reply in due {
                        send(&client, reply, AckKind::Progress.into()).await;
                    }
                }
            }
        }
    }
}

async fn handle(shared: &AckShared, client: &Client, job: Job) {
    match job {
        Job::Settle(settled) => {
            let (mut acked, mut naked) = (0, 0);
            for (reply, settlement) in shared.take(settled) {
                match settlement {
                    Settlement::Ack => acked += 1,
                    _ => naked += 1,
                }
                send(client, reply, payload(&settlement)).await;
            }
            shared.status.add_acked(acked);
            shared.status.add_naked(naked);
        }
        Job::AckNow(reply) => send(client, reply, AckKind::Ack.into()).await,
        Job::Nak(reply) => {
            shared.status.add_naked(1);
            send(client, reply, AckKind::Nak(None).into()).await;
        }
        Job::Flush(done) => {
            if let Err(e) = client.flush().await {
                tracing::warn!(error = %e, "Acknowledgements not flushed");
            }
            let _ = done.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use riverbed_core::Message;

    use super::*;

    fn received(seq: u64) -> Received {
        Received {
            message: Message::new("x"),
            reply: Subject::from(format!("$JS.ACK.S.d.1.{seq}.{seq}.0.0")),
            stream_sequence: seq,
        }
    }

    fn settled(token: u64) -> Settled {
        Settled {
            token,
            settlement: Settlement::Ack,
            message: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn tracks_what_is_unsettled_and_when_it_needs_progress() {
        let acker = AckShared::new(Duration::from_secs(10), Arc::default());
        assert_eq!(acker.resume_point(), None, "nothing delivered yet");
        let tokens: Vec<u64> = (1..=3)
            .map(|s| acker.register(received(s)).unwrap().token)
            .collect();
        assert_eq!(acker.resume_point(), Some(1), "the lowest unsettled");
        assert_eq!(acker.take(vec![settled(tokens[0])]).len(), 1);
        assert!(acker.take(vec![settled(tokens[0])]).is_empty(), "stale");
        assert_eq!(acker.resume_point(), Some(2));

        tokio::time::advance(Duration::from_secs(4)).await;
        assert!(
            acker.due_for_progress().is_empty(),
            "before half of ack_wait"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(acker.due_for_progress().len(), 2, "at half of ack_wait");
        assert!(acker.due_for_progress().is_empty(), "their timer restarted");

        assert_eq!(acker.give_back_unsettled(), 2);
        assert_eq!(acker.resume_point(), Some(4), "after the highest delivered");
    }

    #[test]
    fn deliveries_up_to_the_resume_position_are_not_handed_over() {
        let acker = AckShared::new(Duration::from_secs(10), Arc::default());
        acker.skip_through(5);
        assert!(acker.register(received(5)).is_none());
        assert!(acker.register(received(6)).is_some());
        assert_eq!(acker.status.skipped(), 1);
    }
}
