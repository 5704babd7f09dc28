//! Consumption throughput of `AmqpSource` against a raw lapin consumer, in one run.
//!
//! ```text
//! cargo run --release -p riverbed-amqp --example amqp_bench -- [MESSAGES] [ROUNDS]
//! ```
//!
//! Pre-fills a queue with small persistent messages, then measures (i) a raw lapin consumer
//! (prefetch 1000, manual `multiple` ack every 100 messages) and (ii) an `AmqpSource` with
//! default settings feeding a `NoopSink` through a default pipeline; for reference, the raw
//! consumer also runs with the source's default prefetch (4096). Ratios are against the first
//! row. Prints a markdown table; the client CPU column (user + system time of this process per
//! message) is steadier than throughput on a busy machine.

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

/// CPU time (user + system) used by this process so far.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .map_or(vec![], |(_, rest)| rest.split(' ').collect());
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 (11 and 12 after the command name), in 1/100 s.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

async fn raw_consumer(conn: &Connection, queue: &str, n: usize, prefetch: u16) -> Duration {
    let ch = conn.create_channel().await.unwrap();
    ch.basic_qos(prefetch, BasicQosOptions::default())
        .await
        .unwrap();
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
    // `BENCH_SOURCE` adds configuration lines (for experiments; the table uses defaults).
    let extra = std::env::var("BENCH_SOURCE").unwrap_or_default();
    let config: AmqpSourceConfig =
        toml::from_str(&format!("urls = [\"{URL}\"]\nqueue = \"{queue}\"\n{extra}")).unwrap();
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

async fn purge(ch: &Channel, queue: &str) {
    ch.queue_purge(queue.into(), QueuePurgeOptions::default())
        .await
        .unwrap();
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args
        .next()
        .map_or(200_000, |a| a.parse().expect("MESSAGES"));
    let rounds: usize = args.next().map_or(1, |a| a.parse().expect("ROUNDS"));
    // `raw` or `riverbed` measures only one side (for profiling).
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let queue = format!("riverbed-bench-{}", std::process::id());
    let conn = Connection::connect(URL, ConnectionProperties::default())
        .await
        .expect("RabbitMQ on 127.0.0.1:5672");
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
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
    // Best (elapsed, cpu) of each side.
    let mut raw_best = (Duration::MAX, Duration::ZERO);
    let mut raw4k_best = (Duration::MAX, Duration::ZERO);
    let mut rb_best = (Duration::MAX, Duration::ZERO);
    for round in 1..=rounds {
        if only != "riverbed" {
            for (prefetch, best) in [(1000, &mut raw_best), (4096, &mut raw4k_best)] {
                fill(&ch, &queue, n).await;
                let cpu = cpu_time();
                let raw = raw_consumer(&conn, &queue, n, prefetch).await;
                let cpu = cpu_time() - cpu;
                purge(&ch, &queue).await;
                eprintln!("round {round}: raw lapin prefetch {prefetch} {raw:?} ({cpu:?} cpu)");
                *best = (*best).min((raw, cpu));
            }
        }
        if only != "raw" {
            fill(&ch, &queue, n).await;
            let cpu = cpu_time();
            let rb = riverbed(&queue, n).await;
            let cpu = cpu_time() - cpu;
            purge(&ch, &queue).await;
            eprintln!("round {round}: riverbed {rb:?} ({cpu:?} cpu)");
            rb_best = rb_best.min((rb, cpu));
        }
    }
    for q in [queue.clone(), format!("{queue}.dlq")] {
        ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await
            .unwrap();
    }
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    let cpu_per_msg = |c: Duration| c.as_secs_f64() * 1e6 / n as f64;
    println!(
        "| consumer ({n} persistent messages, best of {rounds}) | msg/s | ratio \
         | client CPU µs/msg |"
    );
    println!("|---|---:|---:|---:|");
    println!(
        "| raw lapin, prefetch 1000, ack `multiple` every 100 | {:.0} | 1.00 | {:.1} |",
        rate(raw_best.0),
        cpu_per_msg(raw_best.1)
    );
    println!(
        "| raw lapin, prefetch 4096, ack `multiple` every 100 | {:.0} | {:.2} | {:.1} |",
        rate(raw4k_best.0),
        rate(raw4k_best.0) / rate(raw_best.0),
        cpu_per_msg(raw4k_best.1)
    );
    let extra = std::env::var("BENCH_SOURCE").unwrap_or_default();
    let label = if extra.is_empty() {
        "riverbed AmqpSource (prefetch 4096) -> NoopSink, defaults".to_owned()
    } else {
        format!(
            "riverbed AmqpSource -> NoopSink, `{}`",
            extra.replace('\n', "; ")
        )
    };
    println!(
        "| {label} | {:.0} | {:.2} | {:.1} |",
        rate(rb_best.0),
        rate(rb_best.0) / rate(raw_best.0),
        cpu_per_msg(rb_best.1)
    );
}
