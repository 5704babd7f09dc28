//! Consumption throughput of `AmqpSource` against a raw lapin consumer, in one run.
//!
//! ```text
//! cargo run --release -p riverbed-amqp --example amqp_bench -- [MESSAGES] [ROUNDS]
//! ```
//!
//! Pre-fills a queue with small persistent messages, then measures (i) a raw lapin consumer
//! (prefetch 1000, manual `multiple` ack every 100 messages) and (ii) an `AmqpSource` with
//! default settings feeding a `NoopSink` through a default pipeline. Prints a markdown table.

use std::time::{Duration, Instant};

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use riverbed_amqp::{AmqpSource, AmqpSourceConfig};
use riverbed_core::{NoopSink, Pipeline};

const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

async fn fill(ch: &Channel, queue: &str, n: usize) {
    let payload = br#"{"sensor":"s-17","value":21.5}"#;
    for chunk in 0..n.div_ceil(10_000) {
        for i in chunk * 10_000..((chunk + 1) * 10_000).min(n) {
            let confirm = ch
                .basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions::default(),
                    payload,
                    BasicProperties::default()
                        .with_delivery_mode(2)
                        .with_message_id(format!("m{i}").into()),
                )
                .await
                .expect("publish");
            drop(confirm);
        }
        ch.wait_for_confirms().await.expect("confirms");
    }
}

async fn raw_consumer(conn: &Connection, queue: &str, n: usize) -> Duration {
    let ch = conn.create_channel().await.unwrap();
    ch.basic_qos(1000, BasicQosOptions::default()).await.unwrap();
    let mut consumer = ch
        .basic_consume(
            queue.into(),
            "raw-bench".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let start = Instant::now();
    let mut seen = 0;
    while let Some(d) = consumer.next().await {
        let d = d.unwrap();
        seen += 1;
        if seen % 100 == 0 || seen == n {
            ch.basic_ack(d.delivery_tag, BasicAckOptions { multiple: true })
                .await
                .unwrap();
        }
        if seen == n {
            break;
        }
    }
    let elapsed = start.elapsed();
    ch.close(200, "OK".into()).await.unwrap();
    elapsed
}

async fn riverbed(queue: &str, n: usize) -> Duration {
    let config: AmqpSourceConfig =
        toml::from_str(&format!("urls = [\"{URL}\"]\nqueue = \"{queue}\"")).unwrap();
    let source = AmqpSource::new(config).unwrap();
    let pipeline = Pipeline::builder()
        .source(source)
        .sink("noop", NoopSink)
        .build()
        .unwrap();
    let stats = pipeline.stats();
    let start = Instant::now();
    let done = async move {
        while stats.snapshot().acked < n as u64 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    let report = pipeline.run(done).await.unwrap();
    let elapsed = start.elapsed();
    assert!(report.stats.acked >= n as u64);
    elapsed
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map_or(200_000, |a| a.parse().expect("MESSAGES"));
    let rounds: usize = args.next().map_or(1, |a| a.parse().expect("ROUNDS"));
    let queue = format!("riverbed-bench-{}", std::process::id());
    let conn = Connection::connect(URL, ConnectionProperties::default())
        .await
        .expect("RabbitMQ on 127.0.0.1:5672");
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    ch.queue_declare(
        queue.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    let (mut raw_best, mut rb_best) = (Duration::MAX, Duration::MAX);
    for round in 1..=rounds {
        fill(&ch, &queue, n).await;
        let raw = raw_consumer(&conn, &queue, n).await;
        ch.queue_purge(queue.as_str().into(), QueuePurgeOptions::default())
            .await
            .unwrap();
        fill(&ch, &queue, n).await;
        let rb = riverbed(&queue, n).await;
        ch.queue_purge(queue.as_str().into(), QueuePurgeOptions::default())
            .await
            .unwrap();
        eprintln!("round {round}: raw {raw:?}, riverbed {rb:?}");
        raw_best = raw_best.min(raw);
        rb_best = rb_best.min(rb);
    }
    ch.queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    println!("| consumer ({n} persistent messages, best of {rounds}) | msg/s | ratio |");
    println!("|---|---:|---:|");
    println!(
        "| raw lapin, prefetch 1000, ack `multiple` every 100 | {:.0} | 1.00 |",
        rate(raw_best)
    );
    println!(
        "| riverbed AmqpSource -> NoopSink, defaults | {:.0} | {:.2} |",
        rate(rb_best),
        rate(rb_best) / rate(raw_best)
    );
}
