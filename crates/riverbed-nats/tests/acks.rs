//! End-to-end acknowledgements against the real server: nothing is acknowledged before every
//! sink committed it, a redelivery counts as an attempt, in-progress acks keep slow work
//! from redelivery, broker retries are delayed naks, dead letters land on their subject.

mod common;

use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use common::{DeleteStreams, Raw, Recorder, available, run_until, server, source_config};
use riverbed_core::{Failure, Outcome, Pipeline, RetryMode, RetryPolicy};
use riverbed_nats::NatsSource;

/// Short, so a delivery lost with a closed pull comes back soon.
const ACK_WAIT: &str = "ack_wait = \"3s\"";

fn retry(attempts: u32, mode: RetryMode) -> RetryPolicy {
    RetryPolicy {
        max_attempts: NonZeroU32::new(attempts).unwrap(),
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(100),
        mode,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_nothing_is_acked_before_the_sink_commits_and_redeliveries_count_as_attempts() {
    if !available() {
        return;
    }
    let _shared = server(false).await;
    common::bounded(async {
        let stream = common::unique("acks");
        let _cleanup = DeleteStreams(vec![stream.clone(), format!("{stream}_dlq")]);
        let raw = Raw::connect().await;
        raw.create_stream(&stream, &[&format!("{stream}.>")]).await;
        const N: usize = 20;
        raw.publish_range(&stream, 0, N, 4).await;

        // A sink that is down: every write fails, the pipeline keeps retrying in process.
        let down = Recorder::failing(|_| Outcome::Transient(Failure::unavailable("db down")));
        let written = down.written.clone();
        let pipeline = Pipeline::builder()
            .source(NatsSource::new(source_config(&stream, "d", ACK_WAIT)).unwrap())
            .retry(retry(1000, RetryMode::InProcess))
            .shutdown_grace(Duration::from_millis(500))
            .sink("down", down)
            .build()
            .unwrap();
        let stats = pipeline.stats();
        let w = written.clone();
        let st = stats.clone();
        run_until(
            pipeline,
            "every message taken in, the sink failing",
            move || st.snapshot().received >= N as u64 && !w.lock().unwrap().is_empty(),
        )
        .await;
        assert_eq!(stats.snapshot().acked, 0, "nothing settled as committed");
        let info = raw.consumer_info(&stream, "d").await;
        assert_eq!(
            info.ack_floor.stream_sequence, 0,
            "the server saw no ack for an uncommitted message"
        );

        // The sink is back: everything comes again, as a later attempt.
        let up = Recorder::new();
        let committed = up.committed.clone();
        let pipeline = Pipeline::builder()
            .source(NatsSource::new(source_config(&stream, "d", ACK_WAIT)).unwrap())
            .sink("up", up)
            .build()
            .unwrap();
        let c = committed.clone();
        run_until(pipeline, "every message committed", move || {
            Recorder::counts(&c).len() == N
        })
        .await;
        let seen = committed.lock().unwrap().clone();
        // nats-server rolls back its delivered sequence when the last delivered message is
        // nak'd, and delivers that one again as a first delivery: it is the only exception.
        assert!(
            seen.iter()
                .filter(|s| s.position != Some(N as u64))
                .all(|s| s.attempt >= 2),
            "redeliveries count as attempts: {seen:#?}"
        );
        assert!(seen.iter().all(|s| s.position.is_some_and(|p| p >= 1)));
        let info = raw.consumer_info(&stream, "d").await;
        assert_eq!(info.ack_floor.stream_sequence, N as u64, "all acknowledged");
        assert_eq!(info.num_ack_pending, 0);
        assert_eq!(info.num_pending, 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_in_progress_acks_keep_a_slow_batch_from_redelivery() {
    if !available() {
        return;
    }
    let _shared = server(false).await;
    common::bounded(async {
        let stream = common::unique("wip");
        let _cleanup = DeleteStreams(vec![stream.clone(), format!("{stream}_dlq")]);
        let raw = Raw::connect().await;
        raw.create_stream(&stream, &[&format!("{stream}.>")]).await;
        raw.publish_range(&stream, 0, 5, 1).await;

        // Each write takes 2.5 times ack_wait: without in-progress acks the server would
        // redeliver the batch while it is being written.
        let source = NatsSource::new(source_config(&stream, "d", "ack_wait = \"2s\"")).unwrap();
        let status = source.status();
        let slow = Recorder::new().slowed(Duration::from_secs(5));
        let (committed, written) = (slow.committed.clone(), slow.written.clone());
        let pipeline = Pipeline::builder()
            .source(source)
            .partitions(NonZeroUsize::new(1).unwrap())
            .sink("slow", slow)
            .build()
            .unwrap();
        let stats = pipeline.stats();
        run_until(pipeline, "the slow batch acknowledged", move || {
            stats.snapshot().acked >= 5
        })
        .await;
        assert_eq!(Recorder::counts(&committed).len(), 5);
        let written = written.lock().unwrap().clone();
        assert_eq!(written.len(), 5, "written once each: {written:?}");
        assert!(written.iter().all(|s| s.attempt == 1), "{written:?}");
        assert!(status.progress_acks() >= 5, "in-progress acks were sent");
        let info = raw.consumer_info(&stream, "d").await;
        assert_eq!(info.num_redelivered, 0, "the server redelivered nothing");
        assert_eq!(info.ack_floor.stream_sequence, 5);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_broker_retry_is_a_delayed_nak_and_dead_letters_carry_their_reason() {
    if !available() {
        return;
    }
    let _shared = server(false).await;
    common::bounded(async {
        let stream = common::unique("retry");
        let dlq = format!("{stream}_dlq");
        let _cleanup = DeleteStreams(vec![stream.clone(), dlq.clone()]);
        let raw = Raw::connect().await;
        raw.create_stream(&stream, &[&format!("{stream}.>")]).await;
        raw.publish_range(&stream, 0, 6, 3).await;

        // m1 fails twice then succeeds (broker retries); m4 is refused for good.
        let sink = Recorder::failing(|m| match m.meta.message_id.as_deref() {
            Some("m1") if m.meta.attempt < 3 => Outcome::Transient(Failure::unavailable("busy")),
            Some("m4") => Outcome::Permanent(Failure::rejected("bad row")),
            _ => Outcome::Ok,
        });
        let committed = sink.committed.clone();
        let source = NatsSource::new(source_config(&stream, "d", "")).unwrap();
        let pipeline = Pipeline::builder()
            .source(source)
            .retry(retry(5, RetryMode::Broker))
            .sink("rec", sink)
            .build()
            .unwrap();
        let stats = pipeline.stats();
        run_until(pipeline, "five committed, one dead-lettered", move || {
            let s = stats.snapshot();
            s.acked >= 5 && s.dead_lettered >= 1
        })
        .await;
        let seen = committed.lock().unwrap().clone();
        let m1 = seen.iter().find(|s| s.id == "m1").expect("m1 committed");
        assert_eq!(m1.attempt, 3, "the server's delivered count is the attempt");
        assert!(!seen.iter().any(|s| s.id == "m4"));
        assert_eq!(Recorder::counts(&committed).len(), 5);

        assert_eq!(raw.messages_in(&dlq).await, 1, "one dead letter stored");
        let letter = raw.message(&dlq, 1).await;
        let header = |name: &str| {
            letter
                .headers
                .get(name)
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default()
        };
        assert_eq!(header("x-riverbed-reason"), "rejected");
        assert!(header("x-riverbed-error").contains("bad row"));
        assert_eq!(
            header("x-riverbed-original-subject"),
            format!("{stream}.k1")
        );
        assert_eq!(header("x-test"), "yes", "the original headers are kept");
        let info = raw.consumer_info(&stream, "d").await;
        assert_eq!(info.ack_floor.stream_sequence, 6, "everything settled");
    })
    .await;
}
