//! RabbitMQ: the raw lapin ceiling, and Riverbed's source into any sinks, at full speed or at
//! a fixed offered load for latency.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use async_trait::async_trait;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use riverbed_amqp::{AmqpSource, AmqpSourceConfig};
use riverbed_core::{BatchOutcome, KeySpec, Message, NoopSink, Pipeline, Sink};

use super::{Ctx, Params, Scenario};
use crate::measure::{Sample, timed};

/// The broker.
pub const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const SENT_HEADER: &str = "x-bench-sent-us";

/// A transaction of about `size` bytes: `{"id","provider","amount","currency","pad"}`.
pub fn transaction(i: u64, size: usize) -> Vec<u8> {
    let head = format!(
        r#"{{"id":"tx-{i}","seq":{i},"provider":"provider-{}","amount":{}.{:02},"currency":"EUR","pad":""#,
        i % 20,
        10 + i % 990,
        i % 100
    );
    let pad = size.saturating_sub(head.len() + 2);
    let mut v = head.into_bytes();
    v.resize(v.len() + pad, b'x');
    v.extend_from_slice(b"\"}");
    v
}

async fn channel() -> Result<(Connection, Channel)> {
    let conn = Connection::connect(URL, ConnectionProperties::default())
        .await
        .context("RabbitMQ on 127.0.0.1:5672")?;
    let ch = conn.create_channel().await?;
    Ok((conn, ch))
}

async fn declare(ch: &Channel, queue: &str) -> Result<()> {
    ch.queue_delete(queue.into(), QueueDeleteOptions::default())
        .await?;
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await?;
    Ok(())
}

fn micros_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// Publishes `range` persistent messages with confirms, `window` unconfirmed at most.
async fn publish(
    ch: &Channel,
    queue: &str,
    range: std::ops::Range<u64>,
    size: usize,
    stamp: bool,
) -> Result<()> {
    let window = 5000;
    let mut pending = 0;
    for i in range {
        let mut props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_message_id(format!("tx-{i}").into());
        if stamp {
            let mut h = FieldTable::default();
            h.insert(SENT_HEADER.into(), AMQPValue::LongLongInt(micros_now()));
            props = props.with_headers(h);
        }
        drop(
            ch.basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                &transaction(i, size),
                props,
            )
            .await?,
        );
        pending += 1;
        if pending == window {
            ch.wait_for_confirms().await?;
            pending = 0;
        }
    }
    ch.wait_for_confirms().await?;
    Ok(())
}

/// Fills this run's queue with the scenario's messages (not measured).
pub async fn fill(ctx: Ctx) -> Result<()> {
    let (conn, ch) = channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let queue = ctx.unique("q");
    declare(&ch, &queue).await?;
    if ctx.rate == 0 {
        publish(&ch, &queue, 0..ctx.messages(), ctx.params.size, false).await?;
    }
    conn.close(200, "OK".into()).await?;
    Ok(())
}

/// Deletes this run's queues.
pub async fn cleanup(ctx: &Ctx) -> Result<()> {
    let (conn, ch) = channel().await?;
    for q in [ctx.unique("q"), format!("{}.dlq", ctx.unique("q"))] {
        ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await?;
    }
    conn.close(200, "OK".into()).await?;
    Ok(())
}

/// The raw ceiling: lapin, manual acks with `multiple` every 100 messages, prefetch 1000.
async fn raw_consume(ctx: Ctx) -> Result<Sample> {
    let n = ctx.messages();
    let (conn, ch) = channel().await?;
    ch.basic_qos(1000, BasicQosOptions::default()).await?;
    let mut consumer = ch
        .basic_consume(
            ctx.unique("q").as_str().into(),
            "raw".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let sample = timed(|| async {
        let mut seen = 0;
        while let Some(d) = consumer.next().await {
            let d = d?;
            seen += 1;
            if seen % 100 == 0 || seen == n {
                ch.basic_ack(d.delivery_tag, BasicAckOptions { multiple: true })
                    .await?;
            }
            if seen == n {
                break;
            }
        }
        Ok(seen)
    })
    .await?;
    conn.close(200, "OK".into()).await?;
    cleanup(&ctx).await?;
    Ok(sample)
}

/// Riverbed's AMQP source for this run's queue, with the scenario's window as prefetch.
pub fn source(ctx: &Ctx) -> Result<AmqpSource> {
    let prefetch = ctx
        .params
        .window
        .map(|w| format!("prefetch = {w}\n"))
        .unwrap_or_default();
    let config: AmqpSourceConfig = toml::from_str(&format!(
        "urls = [\"{URL}\"]\nqueue = \"{}\"\n{prefetch}",
        ctx.unique("q")
    ))?;
    Ok(AmqpSource::new(config)?)
}

/// Wraps a sink and records, for each committed message, how long ago it was published.
struct Latency {
    inner: Arc<dyn Sink>,
    seen: Arc<Mutex<Vec<u64>>>,
}

#[async_trait]
impl Sink for Latency {
    async fn write(&self, batch: &[Message]) -> BatchOutcome {
        let outcome = self.inner.write(batch).await;
        let now = micros_now();
        let mut seen = self.seen.lock().expect("latency lock");
        for (i, m) in batch.iter().enumerate() {
            if let (true, Some(sent)) = (
                outcome.get(i).is_ok(),
                m.headers.get(SENT_HEADER).and_then(|h| h.as_i64()),
            ) {
                seen.push((now - sent).max(0) as u64);
            }
        }
        outcome
    }

    async fn close(&self) -> Result<(), riverbed_core::Failure> {
        self.inner.close().await
    }
}

/// Runs this run's queue through a pipeline into `sinks` (the first one's commits are timed
/// for latency runs), until every message is acknowledged.
pub async fn through(ctx: Ctx, sinks: Vec<(&'static str, Arc<dyn Sink>)>) -> Result<Sample> {
    let n = ctx.messages();
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(n as usize)));
    let mut builder = Pipeline::builder()
        .source(source(&ctx)?)
        .key(KeySpec::JsonPointer("/provider".into()));
    if let Some(p) = ctx.params.partitions {
        builder = builder.partitions(p.try_into()?);
    }
    if let Some(w) = ctx.params.window {
        builder = builder.max_in_flight(w.try_into()?);
    }
    for (i, (name, sink)) in sinks.into_iter().enumerate() {
        let sink: Arc<dyn Sink> = if i == 0 && ctx.rate > 0 {
            Arc::new(Latency {
                inner: sink,
                seen: latencies.clone(),
            })
        } else {
            sink
        };
        builder = builder.sink_with(name, "main", sink, None);
    }
    let pipeline = builder.build()?;
    let stats = pipeline.stats();
    let publisher = (ctx.rate > 0).then(|| tokio::spawn(paced_publish(ctx.clone())));
    let mut sample = timed(|| async move {
        let done = async move {
            while stats.snapshot().acked < n {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        };
        let report = pipeline.run(done).await?;
        Ok(report.stats.acked)
    })
    .await?;
    if let Some(p) = publisher {
        p.await??;
    }
    let mut l = latencies.lock().expect("latency lock").clone();
    if !l.is_empty() {
        l.sort_unstable();
        let q = |p: f64| l[((l.len() - 1) as f64 * p) as usize] as f64 / 1000.0;
        sample.p50_ms = Some(q(0.5));
        sample.p99_ms = Some(q(0.99));
    }
    cleanup(&ctx).await?;
    Ok(sample)
}

/// Publishes this run's messages at `ctx.rate` per second, stamped with their send time.
async fn paced_publish(ctx: Ctx) -> Result<()> {
    let (conn, ch) = channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let started = Instant::now();
    let tick = 100u64; // messages per burst
    let mut sent = 0;
    while sent < ctx.messages() {
        let burst = tick.min(ctx.messages() - sent);
        publish(
            &ch,
            &ctx.unique("q"),
            sent..sent + burst,
            ctx.params.size,
            true,
        )
        .await?;
        sent += burst;
        let due = Duration::from_secs_f64(sent as f64 / ctx.rate as f64);
        tokio::time::sleep(due.saturating_sub(started.elapsed())).await;
    }
    conn.close(200, "OK".into()).await?;
    Ok(())
}

fn sized(size: usize, count: u64) -> Params {
    Params {
        size,
        count: Some(count),
        ..Params::DEFAULT
    }
}

fn backlog(count: u64) -> Params {
    Params {
        window: Some(1000),
        count: Some(count),
        ..Params::DEFAULT
    }
}

/// The RabbitMQ scenarios.
pub fn scenarios() -> Vec<Scenario> {
    let noop = |ctx: Ctx| -> futures::future::BoxFuture<'static, Result<Sample>> {
        Box::pin(through(ctx, vec![("noop", Arc::new(NoopSink))]))
    };
    let mut v = vec![
        Scenario {
            name: "amqp-raw-consume",
            what: "ceiling: raw lapin consumer, prefetch 1000, ack `multiple` every 100 (persistent messages)",
            ceiling: None,
            baseline: None,
            params: Params::DEFAULT,
            prepare: |ctx| Box::pin(fill(ctx)),
            run: |ctx| Box::pin(raw_consume(ctx)),
            latency: false,
        },
        Scenario {
            name: "amqp-noop",
            what: "RabbitMQ -> Riverbed (defaults, keyed by /provider) -> no-op sink",
            ceiling: Some("amqp-raw-consume"),
            baseline: None,
            params: Params::DEFAULT,
            prepare: |ctx| Box::pin(fill(ctx)),
            run: noop,
            latency: true,
        },
        Scenario {
            name: "amqp-noop-prefetch-100",
            what: "same with prefetch and max_in_flight 100 (untuned small window: batches adapt)",
            ceiling: Some("amqp-raw-consume"),
            baseline: None,
            params: Params {
                window: Some(100),
                ..Params::DEFAULT
            },
            prepare: |ctx| Box::pin(fill(ctx)),
            run: noop,
            latency: false,
        },
    ];
    for (name, what, params) in [
        (
            "amqp-noop-1k",
            "size: RabbitMQ -> Riverbed -> no-op, 1 KiB messages (100,000)",
            sized(1024, 100_000),
        ),
        (
            "amqp-noop-16k",
            "size: RabbitMQ -> Riverbed -> no-op, 16 KiB messages (20,000)",
            sized(16 * 1024, 20_000),
        ),
        (
            "amqp-noop-backlog-10k",
            "memory: RabbitMQ -> Riverbed -> no-op, prefetch 1000, backlog 10,000",
            backlog(10_000),
        ),
        (
            "amqp-noop-backlog-1m",
            "memory: RabbitMQ -> Riverbed -> no-op, prefetch 1000, backlog 1,000,000",
            backlog(1_000_000),
        ),
    ] {
        v.push(Scenario {
            name,
            what,
            ceiling: None,
            baseline: None,
            params,
            prepare: |ctx| Box::pin(fill(ctx)),
            run: noop,
            latency: false,
        });
    }
    v
}
