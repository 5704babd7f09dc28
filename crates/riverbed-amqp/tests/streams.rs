//! Where a stream consumer starts: `next` skips the history, an RFC 3339 timestamp starts
//! about there (streams attach by chunk, so a little of what came just before may come too),
//! `first` reads all of it, and a stored offset resumes right after itself.

mod common;

use std::collections::BTreeSet;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{
    Raw, Recorder, Seen, available, broker, committed_ids, run_until, source_config,
    spawn_pipeline, unique,
};
use lapin::types::{AMQPValue, FieldTable};
use riverbed_amqp::{AmqpSource, SourceStatus};
use riverbed_core::Pipeline;

const LIMIT: Duration = Duration::from_secs(60);

fn range(from: usize, to: usize) -> BTreeSet<String> {
    (from..to).map(|i| format!("m{i}")).collect()
}

async fn declare_stream(raw: &Raw, name: &str) {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("stream".into()),
    );
    raw.declare(name, args).await;
}

/// A one-partition pipeline reading `stream` from `offset` (TOML), and its source's status.
fn reader(stream: &str, offset: &str) -> (Pipeline, Arc<SourceStatus>, Arc<Mutex<Vec<Seen>>>) {
    let source = AmqpSource::new(source_config(
        stream,
        &format!("queue_type = \"stream\"\nstream_offset = {offset}"),
    ))
    .unwrap();
    let status = source.status();
    let sink = Recorder::new();
    let committed = sink.committed.clone();
    let pipeline = Pipeline::builder()
        .source(source)
        .partitions(NonZeroUsize::new(1).unwrap())
        .sink("recorder", sink)
        .build()
        .unwrap();
    (pipeline, status, committed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_read_from_next_skips_the_history() {
    if !available() {
        return;
    }
    let _shared = broker(false).await;
    common::bounded(async {
        let stream = common::unique("stream-next");
        let _cleanup = common::DeleteOnPanic(stream.clone());
        let raw = Raw::connect().await;
        declare_stream(&raw, &stream).await;
        raw.publish_range("", &stream, 0, 10).await;

        let (pipeline, status, committed) = reader(&stream, "\"next\"");
        let (stop, run) = spawn_pipeline(pipeline);
        let s = status.clone();
        common::wait_until("attached", LIMIT, || s.sessions() == 1).await;
        raw.publish_range("", &stream, 10, 20).await;
        // Stream order and one partition: once m19 is committed, anything read before it is.
        let c = committed.clone();
        common::wait_until("the new messages", LIMIT, || {
            committed_ids(&c).last().map(String::as_str) == Some("m19")
        })
        .await;
        let _ = stop.send(());
        run.await.unwrap();
        let expected: Vec<String> = (10..20).map(|i| format!("m{i}")).collect();
        assert_eq!(
            committed_ids(&committed),
            expected,
            "only what came after attaching"
        );
        raw.delete(&[stream.clone(), format!("{stream}.dlq")]).await;
    })
    .await;
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_read_from_a_timestamp_starts_about_there() {
    if !available() {
        return;
    }
    let _shared = broker(false).await;
    common::bounded(async {
        let stream = common::unique("stream-time");
        let _cleanup = common::DeleteOnPanic(stream.clone());
        let raw = Raw::connect().await;
        declare_stream(&raw, &stream).await;
        // Three confirmed rounds: at least three chunks before the timestamp.
        for round in 0..3 {
            raw.publish_range("", &stream, round * 5, round * 5 + 5)
                .await;
        }
        let before = now_secs();
        common::wait_until("the next second", LIMIT, || now_secs() > before).await;
        let from = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        raw.publish_range("", &stream, 15, 25).await;

        let (pipeline, _status, committed) = reader(&stream, &format!("\"{from}\""));
        let (stop, run) = spawn_pipeline(pipeline);
        let c = committed.clone();
        common::wait_until("the messages after the timestamp", LIMIT, || {
            committed_ids(&c).last().map(String::as_str) == Some("m24")
        })
        .await;
        let _ = stop.send(());
        run.await.unwrap();
        let ids: BTreeSet<String> = committed_ids(&committed).into_iter().collect();
        assert!(ids.is_superset(&range(15, 25)), "{ids:?}");
        eprintln!("read from {from}: {ids:?}");
        // At most the chunk just before the timestamp comes too.
        let earlier: BTreeSet<String> = ids.difference(&range(15, 25)).cloned().collect();
        assert!(
            earlier.is_subset(&range(10, 15)),
            "read from {from}: {ids:?}"
        );
        raw.delete(&[stream.clone(), format!("{stream}.dlq")]).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_stream_consumer_reads_all_history_and_resumes_after_an_offset() {
    if !available() {
        return;
    }
    let _shared = broker(false).await;
    common::bounded(async {
        let stream = unique("stream");
        let _cleanup = common::DeleteOnPanic(stream.clone());
        let raw = Raw::connect().await;
        let mut args = FieldTable::default();
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("stream".into()),
        );
        raw.declare(&stream, args).await;
        const N: usize = 600;
        raw.publish_range("", &stream, 0, N).await;

        let consume = |extra: &str, resume: Option<u64>, until: usize| {
            let mut source = AmqpSource::new(source_config(
                &stream,
                &format!("queue_type = \"stream\"\nprefetch = 100\n{extra}"),
            ))
            .unwrap();
            if let Some(offset) = resume {
                source = source.resume_after(offset);
            }
            let sink = Recorder::new();
            let committed = sink.committed.clone();
            let pipeline = Pipeline::builder()
                .source(source)
                .partitions(NonZeroUsize::new(1).unwrap())
                .sink("recorder", sink)
                .build()
                .unwrap();
            let stats = pipeline.stats();
            async move {
                tokio::time::timeout(
                    LIMIT,
                    run_until(pipeline, "stream read", move || {
                        stats.snapshot().acked >= until as u64
                    }),
                )
                .await
                .expect("test finishes in time");
                committed.lock().unwrap().clone()
            }
        };

        let all = consume("stream_offset = \"first\"", None, N).await;
        let positions: Vec<u64> = all.iter().map(|s| s.position.unwrap()).collect();
        assert_eq!(
            positions,
            (0..N as u64).collect::<Vec<_>>(),
            "whole history, in order, once"
        );
        assert_eq!(all[0].id, "m0");

        let rest = consume("", Some(449), N - 450).await;
        let positions: BTreeSet<u64> = rest.iter().map(|s| s.position.unwrap()).collect();
        assert_eq!(rest.len(), N - 450, "no duplicate");
        assert_eq!(
            positions,
            (450..N as u64).collect::<BTreeSet<_>>(),
            "resumes exactly after the stored offset"
        );
        assert_eq!(rest[0].id, "m450");
        raw.delete(&[stream.clone(), format!("{stream}.dlq")]).await;
    })
    .await;
}
