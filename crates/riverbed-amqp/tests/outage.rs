//! The source across outages that close every connection: URL rotation, and a stream consumer
//! that reconnects before its first delivery. These tests take the broker lock exclusively.

mod common;

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use common::{Raw, Recorder, Seen, available, broker, close_all_connections, unique, wait_until};
use lapin::types::{AMQPValue, FieldTable};
use riverbed_amqp::{AmqpSource, AmqpSourceConfig};
use riverbed_core::Pipeline;

const LIMIT: Duration = Duration::from_secs(60);

fn config(text: String) -> AmqpSourceConfig {
    toml::from_str(&text).expect("test config parses")
}

fn ids(committed: &Mutex<Vec<Seen>>) -> BTreeSet<String> {
    committed
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.id.clone())
        .collect()
}

fn range(from: usize, to: usize) -> BTreeSet<String> {
    (from..to).map(|i| format!("m{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connects_through_the_next_url_when_the_first_refuses_and_after_an_outage() {
    if !available() {
        return;
    }
    let _exclusive = broker(true).await;
    common::bounded(async {
        let queue = unique("rotation");
        let _cleanup = common::DeleteOnPanic(queue.clone());
        Raw::connect()
            .await
            .declare(&queue, FieldTable::default())
            .await;
        // Nothing listens on port 1: every connection attempt there is refused.
        let source = AmqpSource::new(config(format!(
            "urls = [\"amqp://guest:guest@127.0.0.1:1/%2f\", \"{}\"]\nqueue = \"{queue}\"\n\
             reconnect_initial = \"50ms\"\nreconnect_max = \"500ms\"",
            common::URL
        )))
        .unwrap();
        let status = source.status();
        let sink = Recorder::new();
        let committed = sink.committed.clone();
        let pipeline = Pipeline::builder()
            .source(source)
            .sink("recorder", sink)
            .build()
            .unwrap();
        let (stop, run) = common::spawn_pipeline(pipeline);
        Raw::connect().await.publish_range("", &queue, 0, 10).await;
        let c = committed.clone();
        wait_until("the first ten", LIMIT, || ids(&c) == range(0, 10)).await;
        assert_eq!(status.sessions(), 1);

        close_all_connections().await;
        let s = status.clone();
        wait_until("a new session", LIMIT, || s.reconnects() >= 1).await;
        Raw::connect().await.publish_range("", &queue, 10, 20).await;
        let c = committed.clone();
        wait_until("the next ten", LIMIT, || ids(&c) == range(0, 20)).await;
        let _ = stop.send(());
        run.await.unwrap();
        Raw::connect()
            .await
            .delete(&[queue.clone(), format!("{queue}.dlq")])
            .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_read_from_next_misses_nothing_published_while_it_reconnects() {
    if !available() {
        return;
    }
    let _exclusive = broker(true).await;
    common::bounded(async {
        let stream = unique("stream-next-outage");
        let _cleanup = common::DeleteOnPanic(stream.clone());
        let mut args = FieldTable::default();
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("stream".into()),
        );
        Raw::connect().await.declare(&stream, args).await;
        // A session that dies young waits 5 to 10 s before the source reconnects: the messages
        // below are published while it is away, even on a loaded machine.
        let source = AmqpSource::new(config(format!(
            "urls = [\"{}\"]\nqueue = \"{stream}\"\nqueue_type = \"stream\"\n\
             stream_offset = \"next\"\nreconnect_initial = \"10s\"\nreconnect_max = \"20s\"",
            common::URL
        )))
        .unwrap();
        let status = source.status();
        let sink = Recorder::new();
        let committed = sink.committed.clone();
        let pipeline = Pipeline::builder()
            .source(source)
            .sink("recorder", sink)
            .build()
            .unwrap();
        let (stop, run) = common::spawn_pipeline(pipeline);
        let s = status.clone();
        wait_until("attached at next", LIMIT, || s.sessions() == 1).await;

        close_all_connections().await;
        Raw::connect().await.publish_range("", &stream, 0, 50).await;
        assert_eq!(
            status.sessions(),
            1,
            "published before the source reconnected"
        );
        let c = committed.clone();
        wait_until("everything published during the outage", LIMIT, || {
            ids(&c) == range(0, 50)
        })
        .await;
        assert!(status.reconnects() >= 1);
        let _ = stop.send(());
        run.await.unwrap();
        Raw::connect()
            .await
            .delete(&[stream.clone(), format!("{stream}.dlq")])
            .await;
    })
    .await;
}
