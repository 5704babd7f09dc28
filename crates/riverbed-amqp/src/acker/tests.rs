//! The acker against recording channels: what reaches which channel generation.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use riverbed_core::{Acker, Delivery, Failure, Message, Settled, Settlement};
use tokio::sync::mpsc;

use super::{AckChannel, AckShared};
use crate::delivery::Received;
use crate::retry::RetryJob;
use crate::status::SourceStatus;

/// A frame an acker sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Frame {
    AckUpTo(u64),
    AckOne(u64),
    Nack(u64, bool),
}

/// A channel that records the frames sent on it.
#[derive(Default)]
struct Recorded(Mutex<Vec<Frame>>);

impl Recorded {
    fn take(&self) -> Vec<Frame> {
        std::mem::take(&mut self.0.lock().unwrap())
    }
}

#[async_trait]
impl AckChannel for Recorded {
    async fn ack_up_to(&self, tag: u64) -> lapin::Result<()> {
        self.0.lock().unwrap().push(Frame::AckUpTo(tag));
        Ok(())
    }

    async fn ack_one(&self, tag: u64) -> lapin::Result<()> {
        self.0.lock().unwrap().push(Frame::AckOne(tag));
        Ok(())
    }

    async fn nack(&self, tag: u64, requeue: bool) -> lapin::Result<()> {
        self.0.lock().unwrap().push(Frame::Nack(tag, requeue));
        Ok(())
    }
}

fn acker(is_stream: bool, retry: Option<mpsc::UnboundedSender<RetryJob>>) -> AckShared {
    AckShared::new(1000, is_stream, retry, Arc::new(SourceStatus::default()))
}

/// A new generation `id` on a recording channel.
fn install(acker: &AckShared, id: u32) -> Arc<Recorded> {
    let channel = Arc::new(Recorded::default());
    acker.install(id, channel.clone());
    channel
}

/// Registers deliveries with `tags` (and stream offsets `offset_base + tag`) in generation `id`.
fn deliver(acker: &AckShared, id: u32, tags: &[u64], offset_base: Option<u64>) -> Vec<u64> {
    let received = tags.iter().map(|&tag| Received {
        message: Message::new(format!("m{tag}")),
        tag,
        offset: offset_base.map(|b| b + tag),
    });
    let mut out: Vec<Delivery> = Vec::new();
    acker.register(id, received, None, &mut out);
    out.iter().map(|d| d.token).collect()
}

fn settled(token: u64, settlement: Settlement) -> Settled {
    Settled {
        token,
        settlement,
        message: None,
    }
}

fn acks(tokens: &[u64]) -> Vec<Settled> {
    tokens
        .iter()
        .map(|t| settled(*t, Settlement::Ack))
        .collect()
}

#[tokio::test]
async fn acknowledges_up_to_the_highest_contiguous_completed_tag() {
    let a = acker(false, None);
    let ch = install(&a, 1);
    let t = deliver(&a, 1, &[1, 2, 3, 4, 5], None);
    a.settle(acks(&[t[0], t[1], t[3]]));
    a.flush().await;
    assert_eq!(ch.take(), vec![Frame::AckUpTo(2)], "tag 3 is still open");
    a.flush().await;
    assert_eq!(ch.take(), vec![], "nothing new to send");
    a.settle(acks(&[t[2]]));
    a.flush().await;
    assert_eq!(ch.take(), vec![Frame::AckUpTo(4)]);
    a.settle(acks(&[t[4]]));
    a.flush().await;
    assert_eq!(ch.take(), vec![Frame::AckUpTo(5)]);
    assert_eq!((a.status.acked(), a.status.ack_frames()), (5, 3));
}

#[tokio::test]
async fn requeues_are_nacked_one_by_one_before_the_ack_that_passes_them() {
    let a = acker(false, None);
    let ch = install(&a, 1);
    let t = deliver(&a, 1, &[1, 2, 3, 4], None);
    a.settle(vec![
        settled(t[3], Settlement::Ack),
        settled(t[1], Settlement::Requeue),
        settled(t[0], Settlement::Ack),
        settled(t[2], Settlement::Requeue),
    ]);
    a.flush().await;
    assert_eq!(
        ch.take(),
        vec![
            Frame::Nack(2, true),
            Frame::Nack(3, true),
            Frame::AckUpTo(4)
        ]
    );
    assert_eq!(a.status.nack_frames(), 2);
}

#[tokio::test]
async fn settlements_of_a_retired_generation_never_reach_the_new_channel() {
    let a = acker(false, None);
    let old = install(&a, 1);
    let t = deliver(&a, 1, &[1, 2, 3], None);
    a.settle(acks(&[t[0]]));
    a.retire().await;
    assert_eq!(
        old.take(),
        vec![Frame::AckUpTo(1)],
        "retiring sends what is due"
    );

    // The new channel numbers its deliveries from 1 again: a stale tag 2 or 3 would name one
    // of its own deliveries.
    let new = install(&a, 2);
    let u = deliver(&a, 2, &[1, 2, 3], None);
    a.settle(vec![
        settled(t[1], Settlement::Ack),
        settled(t[2], Settlement::Requeue),
        settled(u[0], Settlement::Ack),
    ]);
    a.flush().await;
    assert_eq!(new.take(), vec![Frame::AckUpTo(1)], "only the new delivery");
    assert_eq!(old.take(), vec![], "nothing more on the retired channel");
    assert_eq!(a.status.stale_settlements(), 2);
}

#[tokio::test]
async fn deliveries_of_a_generation_that_is_not_live_are_not_handed_out() {
    let a = acker(false, None);
    let _ch = install(&a, 2);
    assert!(deliver(&a, 1, &[1, 2], None).is_empty());
    assert_eq!(deliver(&a, 2, &[1], None).len(), 1);
}

#[tokio::test]
async fn a_retry_finished_after_its_channel_retired_is_dropped() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let a = acker(false, Some(tx));
    let _old = install(&a, 1);
    let t = deliver(&a, 1, &[1], None);
    a.settle(vec![Settled {
        token: t[0],
        settlement: Settlement::Retry {
            next_attempt: 2,
            delay: Duration::from_millis(10),
            failure: Failure::unavailable("down"),
        },
        message: Some(Message::new("m1")),
    }]);
    let job = rx.try_recv().expect("the retry reached the worker");
    a.retire().await;
    let new = install(&a, 2);
    let _u = deliver(&a, 2, &[1], None);
    a.retry_done(job.generation, job.seq, true);
    a.flush().await;
    assert_eq!(new.take(), vec![], "the old delivery's ack is not sent");
    assert_eq!(a.status.stale_settlements(), 1);
    // Nothing waits for that retry any more.
    tokio::time::timeout(
        Duration::from_secs(1),
        a.wait_for_retries(Duration::from_secs(5)),
    )
    .await
    .expect("no retry in flight");
}

#[tokio::test]
async fn a_stream_requeue_is_acknowledged_and_bounds_where_the_next_session_resumes() {
    let a = acker(true, None);
    let ch = install(&a, 1);
    let t = deliver(&a, 1, &[1, 2, 3], Some(100));
    a.settle(vec![
        settled(t[0], Settlement::Ack),
        settled(t[1], Settlement::Requeue),
        settled(t[2], Settlement::Ack),
    ]);
    a.flush().await;
    assert_eq!(ch.take(), vec![Frame::AckUpTo(3)], "streams refuse nacks");
    assert_eq!(a.resume_offset(), Some(102), "not past the requeued offset");
}
