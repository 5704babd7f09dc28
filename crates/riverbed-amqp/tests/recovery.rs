//! The source when the broker gets in its way without going down: retry queues it refuses,
//! consumed queues deleted under it. The broker itself stays up, so these tests share it.

mod common;

use std::collections::BTreeSet;
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{
    Raw, Recorder, available, broker, queues_with_prefix, source_config, spawn_pipeline, unique,
};
use lapin::types::FieldTable;
use riverbed_amqp::AmqpSource;
use riverbed_core::{Failure, Outcome, Pipeline, RetryMode, RetryPolicy};

const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_retry_queue_holds_the_retry_instead_of_requeueing_it_in_a_loop() {
    if !available() {
        return;
    }
    let _shared = broker(false).await;
    common::bounded(async {
        let queue = unique("retry-refused");
        let _cleanup = common::DeleteOnPanic(queue.clone());
        let raw = Raw::connect().await;
        raw.declare(&queue, FieldTable::default()).await;
        // The first retry waits 50 to 100 ms: tier 64 ms or 128 ms. Both exist already without
        // the dead-letter arguments the source declares them with, so the broker refuses them.
        let tiers: Vec<String> = [64, 128]
            .iter()
            .map(|ms| format!("{queue}.retry.{ms}ms"))
            .collect();
        for t in &tiers {
            raw.declare(t, FieldTable::default()).await;
        }
        raw.publish("", &queue, "flaky", "{}".into()).await;
        raw.channel.wait_for_confirms().await.unwrap();

        // The sink fails the message as long as the obstacle is there.
        let obstacle = Arc::new(AtomicBool::new(true));
        let failing = obstacle.clone();
        let sink = Recorder::failing(move |_| {
            if failing.load(Ordering::SeqCst) {
                Outcome::Transient(Failure::unavailable("downstream down"))
            } else {
                Outcome::Ok
            }
        });
        let (committed, written) = (sink.committed.clone(), sink.written.clone());
        let source = AmqpSource::new(source_config(&queue, "")).unwrap();
        let status = source.status();
        let pipeline = Pipeline::builder()
            .source(source)
            .partitions(NonZeroUsize::new(1).unwrap())
            .retry(RetryPolicy {
                max_attempts: NonZeroU32::new(3).unwrap(),
                initial_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_millis(100),
                mode: RetryMode::Broker,
            })
            .sink("recorder", sink)
            .build()
            .unwrap();
        let (stop, run) = spawn_pipeline(pipeline);

        let deliveries = {
            let w = written.clone();
            move || w.lock().unwrap().len()
        };
        let (s, d) = (status.clone(), deliveries.clone());
        // Four refused attempts take about 50 + 100 + 200 + 400 ms of backoff. A requeue loop
        // would deliver the message again and again meanwhile.
        common::wait_until(
            "four refused retry attempts (or redeliveries)",
            LIMIT,
            || s.retry_failures() >= 4 || d() > 3,
        )
        .await;
        assert_eq!(deliveries(), 1, "held, not redelivered in a loop");
        assert_eq!(status.nack_frames(), 0, "nothing requeued");
        assert_eq!(
            raw.ready(&queue).await,
            0,
            "the message stays unacknowledged"
        );

        obstacle.store(false, Ordering::SeqCst);
        raw.delete(&tiers).await;
        let c = committed.clone();
        common::wait_until("the retried message committed", LIMIT, || {
            c.lock().unwrap().len() == 1
        })
        .await;
        let _ = stop.send(());
        assert!(run.await.unwrap().drained);
        let attempts: Vec<u32> = written.lock().unwrap().iter().map(|s| s.attempt).collect();
        assert_eq!(
            attempts,
            vec![1, 2],
            "one failure, one retry through the broker"
        );
        assert_eq!(status.retried(), 1);
        let mut all = queues_with_prefix(&format!("{queue}.retry."));
        for q in &all {
            assert_eq!(raw.ready(q).await, 0, "{q} drained");
        }
        all.push(format!("{queue}.dlq"));
        raw.delete(&all).await;
        raw.delete_exchange(&queue).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_no_queue_takes_is_dead_lettered_after_the_hold_limit_and_the_rest_flows() {
    if !available() {
        return;
    }
    let _shared = broker(false).await;
    common::bounded(async {
        let queue = unique("retry-given-up");
        let _cleanup = common::DeleteOnPanic(queue.clone());
        let raw = Raw::connect().await;
        raw.declare(&queue, FieldTable::default()).await;
        // The retry tiers exist with other arguments: the broker refuses them for good.
        let tiers: Vec<String> = [64, 128]
            .iter()
            .map(|ms| format!("{queue}.retry.{ms}ms"))
            .collect();
        for t in &tiers {
            raw.declare(t, FieldTable::default()).await;
        }
        raw.publish("", &queue, "flaky", "{}".into()).await;
        for i in 0..20 {
            raw.publish("", &queue, &format!("steady{i}"), "{}".into())
                .await;
        }
        raw.channel.wait_for_confirms().await.unwrap();
        let sink = Recorder::failing(|seen| {
            if seen.meta.message_id.as_deref() == Some("flaky") {
                Outcome::Transient(Failure::unavailable("downstream down"))
            } else {
                Outcome::Ok
            }
        });
        let committed = sink.committed.clone();
        // A prefetch of 5: while the flaky delivery is held, cumulative acks cannot pass it and
        // the broker stops after 5 unacknowledged deliveries.
        let source = AmqpSource::new(source_config(
            &queue,
            "prefetch = 5\n[retry]\nhold_limit = \"1s\"",
        ))
        .unwrap();
        let pipeline = Pipeline::builder()
            .source(source)
            .partitions(NonZeroUsize::new(1).unwrap())
            .max_in_flight(NonZeroUsize::new(5).unwrap())
            .retry(RetryPolicy {
                max_attempts: NonZeroU32::new(3).unwrap(),
                initial_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_millis(100),
                mode: RetryMode::Broker,
            })
            .sink("recorder", sink)
            .build()
            .unwrap();
        let stats = pipeline.stats();
        let (stop, run) = spawn_pipeline(pipeline);
        let c = committed.clone();
        common::wait_until("the 20 steady messages committed", LIMIT, || {
            c.lock().unwrap().len() == 20
        })
        .await;
        let s = stats.clone();
        common::wait_until("everything acknowledged", LIMIT, || {
            s.snapshot().acked + s.snapshot().broker_retried >= 21
        })
        .await;
        let dlq = format!("{queue}.dlq");
        let letter = raw.get(&dlq).await.expect("flaky is dead-lettered");
        let headers = letter.delivery.properties.headers().clone().unwrap();
        let text = |name: &str| match headers.inner().get(name) {
            Some(lapin::types::AMQPValue::LongString(s)) => s.to_string(),
            other => panic!("header {name}: {other:?}"),
        };
        assert_eq!(text("x-riverbed-reason"), "retry_unavailable");
        assert!(
            text("x-riverbed-error").contains("downstream down"),
            "{}",
            text("x-riverbed-error")
        );
        assert!(text("x-riverbed-error").contains("PRECONDITION_FAILED"));
        assert!(raw.get(&dlq).await.is_none(), "exactly one letter");
        let _ = stop.send(());
        assert!(run.await.unwrap().drained);
        assert_eq!(raw.ready(&queue).await, 0, "nothing left behind");
        let mut all = tiers.clone();
        all.extend([queue.clone(), dlq]);
        raw.delete(&all).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_deleted_under_the_consumer_is_declared_again_and_consumed() {
    if !available() {
        return;
    }
    let _shared = broker(false).await;
    common::bounded(async {
        let queue = unique("deleted");
        let _cleanup = common::DeleteOnPanic(queue.clone());
        let raw = Raw::connect().await;
        raw.declare(&queue, FieldTable::default()).await;
        raw.publish_range("", &queue, 0, 10).await;
        let source = AmqpSource::new(source_config(&queue, "")).unwrap();
        let status = source.status();
        let sink = Recorder::new();
        let committed = sink.committed.clone();
        let pipeline = Pipeline::builder()
            .source(source)
            .sink("recorder", sink)
            .build()
            .unwrap();
        let (stop, run) = spawn_pipeline(pipeline);
        let s = status.clone();
        common::wait_until("the first ten acknowledged", LIMIT, || s.acked() == 10).await;

        // The broker cancels the consumer of a deleted queue (`basic.cancel`).
        raw.delete(std::slice::from_ref(&queue)).await;
        let s = status.clone();
        common::wait_until("a new session", LIMIT, || s.reconnects() == 1).await;
        assert_eq!(raw.ready(&queue).await, 0, "the queue was declared again");
        raw.publish_range("", &queue, 10, 20).await;
        let c = committed.clone();
        common::wait_until("the next ten committed", LIMIT, || {
            c.lock().unwrap().len() == 20
        })
        .await;
        let _ = stop.send(());
        assert!(run.await.unwrap().drained);
        let counts = Recorder::counts(&committed);
        let expected: BTreeSet<String> = (0..20).map(|i| format!("m{i}")).collect();
        assert_eq!(counts.keys().cloned().collect::<BTreeSet<_>>(), expected);
        assert!(
            counts.values().all(|n| *n == 1),
            "no duplicates: {counts:?}"
        );
        assert_eq!(status.acked(), 20);
        raw.delete(&[queue.clone(), format!("{queue}.dlq")]).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_dies_young_reconnects_after_a_growing_delay() {
    if !available() {
        return;
    }
    let _shared = broker(false).await;
    common::bounded(async {
        let queue = unique("dies-young");
        let _cleanup = common::DeleteOnPanic(queue.clone());
        let config: riverbed_amqp::AmqpSourceConfig = toml::from_str(&format!(
            "urls = [\"{}\"]\nqueue = \"{queue}\"\n\
             reconnect_initial = \"200ms\"\nreconnect_max = \"2s\"",
            common::URL
        ))
        .unwrap();
        let source = AmqpSource::new(config).unwrap();
        let status = source.status();
        let pipeline = Pipeline::builder()
            .source(source)
            .sink("recorder", Recorder::new())
            .build()
            .unwrap();
        let (stop, run) = spawn_pipeline(pipeline);
        let raw = Raw::connect().await;
        // Each session is cancelled right after it starts (its queue deleted): without a
        // backoff the source would reconnect in a tight loop.
        let mut gaps = Vec::new();
        for session in 1..=5 {
            let s = status.clone();
            common::wait_until("a session", LIMIT, || s.sessions() == session).await;
            let deleted = std::time::Instant::now();
            raw.delete(std::slice::from_ref(&queue)).await;
            let s = status.clone();
            common::wait_until("the next session", LIMIT, || s.sessions() > session).await;
            gaps.push(deleted.elapsed());
        }
        let _ = stop.send(());
        run.await.unwrap();
        // The backoff doubles from 200 ms up to 2 s, each delay jittered down to half.
        for (gap, base) in gaps.iter().zip([200u64, 400, 800, 1600, 2000]) {
            assert!(
                *gap >= Duration::from_millis(base / 2),
                "reconnected {gap:?} after the loss; the backoff asked at least {} ms: {gaps:?}",
                base / 2
            );
        }
        raw.delete(&[queue.clone(), format!("{queue}.dlq")]).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_queue_deleted_under_the_consumer_leaves_no_consumer_behind_on_the_others() {
    if !available() {
        return;
    }
    let _shared = broker(false).await;
    common::bounded(async {
        let queue = unique("partition_deleted");
        let parts = [format!("{queue}.0"), format!("{queue}.1")];
        let source = AmqpSource::partitioned(
            source_config(&queue, "queue_type = \"quorum\""),
            std::num::NonZeroU16::new(2).unwrap(),
        )
        .unwrap();
        let status = source.status();
        let sink = Recorder::new();
        let committed = sink.committed.clone();
        let pipeline = Pipeline::builder()
            .source(source)
            .sink("recorder", sink)
            .build()
            .unwrap();
        let (stop, run) = spawn_pipeline(pipeline);
        let raw = Raw::connect().await;
        let s = status.clone();
        common::wait_until("consuming", LIMIT, || s.sessions() == 1).await;
        raw.publish_range("", &parts[1], 0, 10).await;
        let c = committed.clone();
        common::wait_until("the first ten", LIMIT, || c.lock().unwrap().len() == 10).await;

        // The broker cancels the consumer of `.0` only; the session's consumer of `.1`, on
        // the same channel, must not outlive the session and keep `.1` to itself.
        raw.delete(std::slice::from_ref(&parts[0])).await;
        let s = status.clone();
        common::wait_until("a new session", LIMIT, || s.reconnects() == 1).await;
        raw.publish_range("", &parts[1], 10, 20).await;
        raw.publish_range("", &parts[0], 20, 30).await;
        let c = committed.clone();
        common::wait_until("both partitions consumed again", LIMIT, || {
            c.lock().unwrap().len() == 30
        })
        .await;
        let _ = stop.send(());
        assert!(run.await.unwrap().drained);
        let counts = Recorder::counts(&committed);
        assert_eq!(counts.len(), 30, "{counts:?}");
        assert!(
            counts.values().all(|n| *n == 1),
            "no duplicates: {counts:?}"
        );
        let mut all = parts.to_vec();
        all.push(format!("{queue}.dlq"));
        raw.delete(&all).await;
        raw.delete_exchange(&queue).await;
    })
    .await;
}
