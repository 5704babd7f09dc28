//! History for a late consumer: a new durable starts from the stream's beginning, a sequence
//! or only what is new; a source resumes after a position stored with the sink's data.

mod common;

use common::{DeleteStreams, Raw, Recorder, available, run_until, server, source_config};
use riverbed_core::{Failure, Outcome, Pipeline};
use riverbed_nats::NatsSource;

/// Runs a pipeline on `durable` until `n` distinct messages are committed; returns the committed
/// positions in commit order.
async fn consume(stream: &str, durable: &str, extra: &str, n: u64) -> Vec<u64> {
    consume_source(
        NatsSource::new(source_config(stream, durable, extra)).unwrap(),
        n,
    )
    .await
}

async fn consume_source(source: NatsSource, n: u64) -> Vec<u64> {
    consume_until(source, n, || true).await
}

/// Like [`consume_source`], also waiting for `also`.
async fn consume_until(
    source: NatsSource,
    n: u64,
    also: impl Fn() -> bool + Send + 'static,
) -> Vec<u64> {
    let sink = Recorder::new();
    let committed = sink.committed.clone();
    let pipeline = Pipeline::builder()
        .source(source)
        .sink("rec", sink)
        .build()
        .unwrap();
    let seen = committed.clone();
    run_until(pipeline, "the expected messages committed", move || {
        let distinct: std::collections::BTreeSet<Option<u64>> =
            seen.lock().unwrap().iter().map(|s| s.position).collect();
        distinct.len() as u64 >= n && also()
    })
    .await;
    let mut positions: Vec<u64> = committed
        .lock()
        .unwrap()
        .iter()
        .filter_map(|s| s.position)
        .collect();
    positions.sort_unstable();
    positions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_late_consumers_read_history_from_all_a_sequence_or_only_new() {
    if !available() {
        return;
    }
    let _shared = server(false).await;
    common::bounded(async {
        let stream = common::unique("history");
        let _cleanup = DeleteStreams(vec![stream.clone(), format!("{stream}_dlq")]);
        let raw = Raw::connect().await;
        raw.create_stream(&stream, &[&format!("{stream}.>")]).await;
        raw.publish_range(&stream, 0, 10, 2).await;

        assert_eq!(
            consume(&stream, "all", "", 10).await,
            (1..=10).collect::<Vec<_>>()
        );
        assert_eq!(
            consume(&stream, "from6", "deliver = 6", 5).await,
            (6..=10).collect::<Vec<_>>()
        );
        let filtered = format!("filter_subject = \"{stream}.k1\"");
        assert_eq!(
            consume(&stream, "odd", &filtered, 5).await,
            vec![2, 4, 6, 8, 10],
            "the filter keeps one subject (n % 2 == 1 went to k1)"
        );

        // `new` sees only what is published after it was created.
        let source = NatsSource::new(source_config(&stream, "new", "deliver = \"new\"")).unwrap();
        let sink = Recorder::new();
        let committed = sink.committed.clone();
        let pipeline = Pipeline::builder()
            .source(source)
            .sink("rec", sink)
            .build()
            .unwrap();
        let stats = pipeline.stats();
        let (stop, run) = {
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let run = tokio::spawn(pipeline.run(async move {
                let _ = rx.await;
            }));
            (tx, run)
        };
        common::wait_until_async("the new durable exists", common::LIMIT, || async {
            raw.js
                .get_stream(&stream)
                .await
                .unwrap()
                .consumer_info("new")
                .await
                .is_ok()
        })
        .await;
        raw.publish_range(&stream, 10, 12, 2).await;
        common::wait_until("the two new messages", common::LIMIT, || {
            stats.snapshot().acked >= 2
        })
        .await;
        stop.send(()).unwrap();
        run.await.unwrap().unwrap();
        let mut positions: Vec<u64> = committed
            .lock()
            .unwrap()
            .iter()
            .filter_map(|s| s.position)
            .collect();
        positions.sort_unstable();
        assert_eq!(positions, vec![11, 12]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_resume_after_a_stored_position_skips_what_was_committed() {
    if !available() {
        return;
    }
    let _shared = server(false).await;
    common::bounded(async {
        let stream = common::unique("resume");
        let _cleanup = DeleteStreams(vec![stream.clone(), format!("{stream}_dlq")]);
        let raw = Raw::connect().await;
        raw.create_stream(&stream, &[&format!("{stream}.>")]).await;
        raw.publish_range(&stream, 0, 10, 2).await;

        // A new durable resuming after 4 starts at 5.
        let fresh = NatsSource::new(source_config(&stream, "fresh", "")).unwrap();
        assert_eq!(
            consume_source(fresh.resume_after(4), 6).await,
            (5..=10).collect::<Vec<_>>()
        );

        // An existing durable that acknowledged nothing (its sink failed) resumes after the
        // stored 7: 1..=7 are acknowledged without reaching the sink.
        let failing = Recorder::failing(|_| Outcome::Transient(Failure::unavailable("down")));
        let pipeline = Pipeline::builder()
            .source(NatsSource::new(source_config(&stream, "old", "ack_wait = \"2s\"")).unwrap())
            .shutdown_grace(std::time::Duration::from_millis(200))
            .sink("down", failing)
            .build()
            .unwrap();
        let stats = pipeline.stats();
        run_until(pipeline, "all taken in", move || {
            stats.snapshot().received >= 10
        })
        .await;
        assert_eq!(
            raw.consumer_info(&stream, "old")
                .await
                .ack_floor
                .stream_sequence,
            0
        );
        let old = NatsSource::new(source_config(&stream, "old", "ack_wait = \"2s\"")).unwrap();
        let status = old.status();
        // The earlier run gave its deliveries back with naks; nats-server may deliver the
        // last one twice then (a duplicate the sinks absorb), never one at or before 7.
        let skipped = status.clone();
        let mut positions =
            consume_until(old.resume_after(7), 3, move || skipped.skipped() >= 7).await;
        positions.dedup();
        assert_eq!(positions, vec![8, 9, 10]);
        let info = raw.consumer_info(&stream, "old").await;
        assert_eq!(
            info.ack_floor.stream_sequence, 10,
            "the skipped ones are acknowledged"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_a_durable_the_server_loses_is_created_again_without_replaying_history() {
    if !available() {
        return;
    }
    let _shared = server(false).await;
    common::bounded(async {
        let stream = common::unique("lost");
        let _cleanup = DeleteStreams(vec![stream.clone(), format!("{stream}_dlq")]);
        let raw = Raw::connect().await;
        raw.create_stream(&stream, &[&format!("{stream}.>")]).await;
        const N: usize = 300;
        raw.publish_range(&stream, 0, N, 4).await;

        let extra = "max_ack_pending = 32\nbatch = 16\nidle_heartbeat = \"1s\"\nexpires = \"4s\"";
        let source = NatsSource::new(source_config(&stream, "d", extra)).unwrap();
        let status = source.status();
        let sink = Recorder::new().slowed(std::time::Duration::from_millis(10));
        let committed = sink.committed.clone();
        let pipeline = Pipeline::builder()
            .source(source)
            .max_in_flight(std::num::NonZeroUsize::new(32).unwrap())
            .sink("rec", sink)
            .build()
            .unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let run = tokio::spawn(pipeline.run(async move {
            let _ = stopped.await;
        }));
        let distinct = || Recorder::counts(&committed).len();
        common::wait_until("a third committed", common::LIMIT, || distinct() >= N / 3).await;
        raw.js
            .get_stream(&stream)
            .await
            .unwrap()
            .delete_consumer("d")
            .await
            .unwrap();
        common::wait_until("everything committed", common::LIMIT, || distinct() >= N).await;
        stop.send(()).unwrap();
        run.await.unwrap().unwrap();
        let commits = committed.lock().unwrap().len();
        assert!(status.renewals() >= 1, "the lost consumer was noticed");
        assert!(
            commits <= N + 2 * 32,
            "{commits} commits for {N}: the new durable replayed history"
        );
    })
    .await;
}
