//! The source against a misbehaving broker: `rabbitmqctl stop_app` / `start_app` and
//! `close_all_connections` in the middle of a stream. Nothing may be lost, and duplicates may
//! only be redeliveries. These tests take the broker lock exclusively and live in their own
//! test binary, so no other RabbitMQ test runs while they break things.

mod common;

use std::collections::BTreeSet;
use std::future::Future;
use std::process::Command;
use std::time::Duration;

use common::{Raw, Recorder, available, broker, rabbitmqctl, source_config, unique, wait_until};
use lapin::types::FieldTable;
use riverbed_amqp::AmqpSource;
use riverbed_core::Pipeline;

const LIMIT: Duration = Duration::from_secs(90);

/// Restarts the broker application when dropped, even if the test failed half-way.
struct RestartOnDrop;

impl Drop for RestartOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl").arg("start_app").output();
        let _ = Command::new("rabbitmqctl")
            .args(["await_startup", "--timeout", "60"])
            .output();
    }
}

/// Consumes a durable queue of `n` messages through a slowed pipeline, runs `chaos` once a
/// tenth is committed, and checks that every message was committed, duplicates being only
/// redeliveries.
async fn survives<F: Future<Output = ()>>(name: &str, n: usize, chaos: impl FnOnce() -> F) {
    let queue = unique(name);
    let _cleanup = common::DeleteOnPanic(queue.clone());
    {
        let raw = Raw::connect().await;
        raw.declare(&queue, FieldTable::default()).await;
        raw.publish_range("", &queue, 0, n).await;
    }
    let source = AmqpSource::new(source_config(&queue, "prefetch = 50")).unwrap();
    let status = source.status();
    let sink = Recorder::new().slowed(Duration::from_millis(40));
    let committed = sink.committed.clone();
    let dir = tempfile::tempdir().unwrap();
    let (table, rows) = table_sink(&dir.path().join("rows.db")).await;
    let pipeline = Pipeline::builder()
        .source(source)
        .sink("recorder", sink)
        .sink("table", table)
        .build()
        .unwrap();
    let (stop, run) = common::spawn_pipeline(pipeline);
    let unique_committed = |c: &std::sync::Mutex<Vec<common::Seen>>| {
        c.lock()
            .unwrap()
            .iter()
            .map(|s| s.id.clone())
            .collect::<BTreeSet<_>>()
            .len()
    };
    let c = committed.clone();
    wait_until("a tenth committed", LIMIT, || {
        unique_committed(&c) >= n / 10
    })
    .await;
    assert!(
        unique_committed(&committed) < n,
        "the stream is still flowing"
    );
    chaos().await;
    let c = committed.clone();
    wait_until("every message committed", LIMIT, || {
        unique_committed(&c) == n
    })
    .await;
    assert!(status.reconnects() >= 1, "the source reconnected");
    let _ = stop.send(());
    let report = run.await.unwrap();
    assert!(report.drained);

    let seen = committed.lock().unwrap().clone();
    let ids: BTreeSet<String> = seen.iter().map(|s| s.id.clone()).collect();
    let published: BTreeSet<String> = (0..n).map(|i| format!("m{i}")).collect();
    assert_eq!(
        ids, published,
        "the committed set is exactly the published set"
    );
    let stored: Vec<(String, i64)> =
        sqlx::query_as("SELECT message_id, count(*) FROM rows GROUP BY message_id ORDER BY 1")
            .fetch_all(&rows)
            .await
            .unwrap();
    assert_eq!(stored.len(), n, "the table holds a row for every message");
    let stored: BTreeSet<String> = stored.into_iter().map(|(id, _)| id).collect();
    assert_eq!(
        stored, published,
        "the table's rows are exactly the published messages"
    );
    let first_deliveries = seen.iter().filter(|s| !s.redelivered).count();
    assert!(
        first_deliveries <= n,
        "a message was delivered for the first time twice"
    );
    eprintln!(
        "{name}: {} commits for {n} messages, {} reconnects",
        seen.len(),
        status.reconnects()
    );
    let raw = Raw::connect().await;
    assert_eq!(raw.ready(&queue).await, 0, "nothing left behind");
    raw.delete(&[queue.clone(), format!("{queue}.dlq")]).await;
}

/// A SQLite table sink (insert by message id, a redelivery skipped), and a pool to read it.
async fn table_sink(path: &std::path::Path) -> (impl riverbed_core::Sink, sqlx::SqlitePool) {
    use riverbed_sql::{Column, ColumnType, Ident, SqliteWriter, TableSpec, WriteMode};
    let col = |n: &str, ty, from: &str| Column {
        name: Ident::new(n).unwrap(),
        ty,
        from: from.parse().unwrap(),
        required: true,
    };
    let spec = TableSpec {
        table: vec![Ident::new("rows").unwrap()],
        columns: vec![
            col("message_id", ColumnType::Text, "$message_id"),
            col("id", ColumnType::Integer, "/id"),
        ],
        key: vec![Ident::new("message_id").unwrap()],
        mode: WriteMode::Insert,
        create: true,
    };
    let pool = riverbed_sql::sqlite_pool(path).await.unwrap();
    let writer = SqliteWriter::new(pool.clone(), std::sync::Arc::new(spec), None)
        .await
        .unwrap();
    (writer.into_sink("table"), pool)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_a_broker_restart_mid_stream() {
    if !available() {
        return;
    }
    let _exclusive = broker(true).await;
    common::bounded(async {
        let _restart = RestartOnDrop;
        let test = survives("restart", 4000, || async {
            tokio::task::spawn_blocking(|| {
                rabbitmqctl(&["stop_app"]);
                rabbitmqctl(&["start_app"]);
                rabbitmqctl(&["await_startup", "--timeout", "60"]);
            })
            .await
            .unwrap();
        });
        test.await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_closed_connections_mid_stream() {
    if !available() {
        return;
    }
    let _exclusive = broker(true).await;
    common::bounded(async {
        let test = survives("closed", 4000, || async {
            tokio::task::spawn_blocking(|| rabbitmqctl(&["close_all_connections", "test"]))
                .await
                .unwrap();
        });
        test.await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_named_queue_is_declared_again_after_a_reconnect() {
    if !available() {
        return;
    }
    let _exclusive = broker(true).await;
    common::bounded(async {
        let exchange = unique("fanout");
        let _cleanup = common::DeleteOnPanic(exchange.clone());
        let config = source_config(
            "",
            &format!(
                "dead_letter_queue = \"{exchange}.dlq\"\n\
                 [[exchanges]]\nname = \"{exchange}\"\nkind = \"fanout\"\n\
                 durable = false\nauto_delete = true\n\
                 [[bindings]]\nexchange = \"{exchange}\""
            ),
        );
        let source = AmqpSource::new(config).unwrap();
        let status = source.status();
        let sink = Recorder::new();
        let committed = sink.committed.clone();
        let pipeline = Pipeline::builder()
            .source(source)
            .sink("recorder", sink)
            .build()
            .unwrap();
        let (stop, run) = common::spawn_pipeline(pipeline);
        let test = async {
            let s = status.clone();
            wait_until("the first session", LIMIT, || s.sessions() == 1).await;
            let first = status.queue();
            assert!(first.starts_with("amq.gen-"), "{first}");
            Raw::connect()
                .await
                .publish_range(&exchange, "", 0, 10)
                .await;
            let c = committed.clone();
            wait_until("first ten", LIMIT, || c.lock().unwrap().len() == 10).await;

            tokio::task::spawn_blocking(|| rabbitmqctl(&["close_all_connections", "test"]))
                .await
                .unwrap();
            let s = status.clone();
            wait_until("a new session", LIMIT, || s.sessions() == 2).await;
            let second = status.queue();
            assert!(second.starts_with("amq.gen-"), "{second}");
            assert_ne!(first, second, "a server-named queue gets a new name");
            Raw::connect()
                .await
                .publish_range(&exchange, "", 10, 20)
                .await;
            let c = committed.clone();
            wait_until("next ten", LIMIT, || c.lock().unwrap().len() == 20).await;
        };
        tokio::time::timeout(Duration::from_secs(120), test)
            .await
            .expect("test finishes in time");
        let _ = stop.send(());
        run.await.unwrap();
        let ids: BTreeSet<String> = committed
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.id.clone())
            .collect();
        assert_eq!(ids.len(), 20);
        Raw::connect()
            .await
            .delete(&[format!("{exchange}.dlq")])
            .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_consumer_resumes_after_the_settled_offset_on_reconnect() {
    if !available() {
        return;
    }
    let _exclusive = broker(true).await;
    common::bounded(async {
        let stream = unique("stream-chaos");
        let _cleanup = common::DeleteOnPanic(stream.clone());
        const N: usize = 5000;
        {
            let raw = Raw::connect().await;
            let mut args = FieldTable::default();
            args.insert(
                "x-queue-type".into(),
                lapin::types::AMQPValue::LongString("stream".into()),
            );
            raw.declare(&stream, args).await;
            raw.publish_range("", &stream, 0, N).await;
        }
        let source = AmqpSource::new(source_config(
            &stream,
            "queue_type = \"stream\"\nstream_offset = \"first\"\nprefetch = 50",
        ))
        .unwrap();
        let status = source.status();
        let sink = Recorder::new().slowed(Duration::from_millis(50));
        let committed = sink.committed.clone();
        let pipeline = Pipeline::builder()
            .source(source)
            .sink("recorder", sink)
            .build()
            .unwrap();
        let (stop, run) = common::spawn_pipeline(pipeline);
        let positions = |c: &std::sync::Mutex<Vec<common::Seen>>| {
            c.lock()
                .unwrap()
                .iter()
                .map(|s| s.position.unwrap())
                .collect::<BTreeSet<u64>>()
        };
        let test = async {
            let c = committed.clone();
            wait_until("a tenth read", LIMIT, || positions(&c).len() >= N / 10).await;
            assert!(
                positions(&committed).len() < N,
                "the stream is still being read"
            );
            tokio::task::spawn_blocking(|| rabbitmqctl(&["close_all_connections", "test"]))
                .await
                .unwrap();
            let c = committed.clone();
            wait_until("the whole stream", LIMIT, || positions(&c).len() == N).await;
        };
        tokio::time::timeout(Duration::from_secs(120), test)
            .await
            .expect("test finishes in time");
        let _ = stop.send(());
        run.await.unwrap();
        assert!(status.reconnects() >= 1);
        let seen = committed.lock().unwrap().clone();
        assert_eq!(
            positions(&committed),
            (0..N as u64).collect::<BTreeSet<_>>(),
            "no gap across the reconnect"
        );
        let mut reads = std::collections::BTreeMap::new();
        for s in &seen {
            *reads.entry(s.position.unwrap()).or_insert(0) += 1;
        }
        let twice: Vec<u64> = reads
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(p, _)| *p)
            .collect();
        // Only what was in flight when the connection dropped may be read twice: one range
        // starting right after the settled prefix, about a prefetch window long (the broker
        // sends streams by chunks, so it overshoots the window by up to a chunk). Resuming from
        // `first` would read the first tenth twice.
        if let (Some(first), Some(last)) = (twice.first(), twice.last()) {
            assert!(
                *first >= N as u64 / 10 && twice.len() < N / 5,
                "read twice: {first}..{last} ({}): not resumed after the settled offset",
                twice.len()
            );
            assert_eq!(
                (last - first + 1) as usize,
                twice.len(),
                "the re-read positions form one range"
            );
        }
        eprintln!("stream: {} reads for {N} messages", seen.len());
        Raw::connect()
            .await
            .delete(&[stream.clone(), format!("{stream}.dlq")])
            .await;
    })
    .await;
}
