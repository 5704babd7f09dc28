//! RabbitMQ: the raw lapin ceiling, and Riverbed's source into any sinks, at full speed or at
//! a fixed offered load for latency.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use riverbed_amqp::{AmqpSource, AmqpSourceConfig};
use riverbed_core::{KeySpec, NoopSink, Pipeline, PipelineBuilder, Sink};

use super::latency::{Latencies, SENT_HEADER, Timed, micros_now};
use super::{Ctx, Params, Scenario};
use crate::measure::{Sample, timed};

/// The broker.
pub const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// Riverbed's default prefetch (`riverbed_amqp` config): the raw ceiling uses the same window.
pub const DEFAULT_PREFETCH: usize = 4096;

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

/// A connection and a channel on the broker.
pub async fn channel() -> Result<(Connection, Channel)> {
    let conn = Connection::connect(URL, ConnectionProperties::default())
        .await
        .context("RabbitMQ on 127.0.0.1:5672")?;
    let ch = conn.create_channel().await?;
    Ok((conn, ch))
}

/// Declares `queue` durable and empty.
pub async fn declare(ch: &Channel, queue: &str) -> Result<()> {
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

/// Publishes `range` persistent messages with confirms, `window` unconfirmed at most.
pub async fn publish(
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

/// The raw ceiling: lapin, manual acks with `multiple` every 100 messages, prefetch as
/// Riverbed's default (or the scenario's window).
async fn raw_consume(ctx: Ctx) -> Result<Sample> {
    let n = ctx.messages();
    let (conn, ch) = channel().await?;
    let prefetch = ctx.params.window.unwrap_or(DEFAULT_PREFETCH);
    ch.basic_qos(u16::try_from(prefetch)?, BasicQosOptions::default())
        .await?;
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

/// A pipeline reading this run's queue, keyed by `/provider`, with the scenario's partitions
/// and window; in a latency run its acknowledgements are timed into `latencies`.
pub fn pipeline_builder(ctx: &Ctx, latencies: &Latencies) -> Result<PipelineBuilder> {
    let source = source(ctx)?;
    let mut builder = if ctx.rate > 0 {
        Pipeline::builder().source(Timed::new(source, latencies.clone()))
    } else {
        Pipeline::builder().source(source)
    };
    builder = builder.key(KeySpec::JsonPointer("/provider".into()));
    if let Some(p) = ctx.params.partitions {
        builder = builder.partitions(p.try_into()?);
    }
    if let Some(w) = ctx.params.window {
        builder = builder.max_in_flight(w.try_into()?);
    }
    Ok(builder)
}

/// Runs this run's queue through a pipeline into `sinks` until every message is
/// acknowledged; a latency run publishes at `ctx.rate` meanwhile and times each message from
/// its publication to its acknowledgement (every sink committed).
pub async fn through(ctx: Ctx, sinks: Vec<(&'static str, Arc<dyn Sink>)>) -> Result<Sample> {
    let n = ctx.messages();
    let latencies = Latencies::default();
    let mut builder = pipeline_builder(&ctx, &latencies)?;
    for (name, sink) in sinks {
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
    if let Some((p50, p99)) = latencies.percentiles() {
        (sample.p50_ms, sample.p99_ms) = (Some(p50), Some(p99));
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

fn raw(name: &'static str, what: &'static str, params: Params) -> Scenario {
    Scenario {
        name,
        what,
        ceiling: None,
        baseline: None,
        params,
        prepare: |ctx| Box::pin(fill(ctx)),
        run: |ctx| Box::pin(raw_consume(ctx)),
        latency: false,
    }
}

fn noop(
    name: &'static str,
    what: &'static str,
    ceiling: Option<&'static str>,
    params: Params,
    latency: bool,
) -> Scenario {
    Scenario {
        name,
        what,
        ceiling,
        baseline: None,
        params,
        prepare: |ctx| Box::pin(fill(ctx)),
        run: |ctx| Box::pin(through(ctx, vec![("noop", Arc::new(NoopSink))])),
        latency,
    }
}

/// The RabbitMQ scenarios.
pub fn scenarios() -> Vec<Scenario> {
    let ceiling = Some("amqp-raw-consume");
    vec![
        raw(
            "amqp-raw-consume",
            "ceiling: raw lapin consumer, prefetch 4096 (as Riverbed), ack `multiple` every 100, persistent 100 B messages",
            Params::DEFAULT,
        ),
        noop(
            "amqp-noop",
            "RabbitMQ -> Riverbed (defaults, keyed by /provider) -> no-op sink",
            ceiling,
            Params::DEFAULT,
            true,
        ),
        noop(
            "amqp-noop-tuned",
            "same, tuned: 1 partition (a no-op sink needs no parallelism; fewer tasks to wake)",
            ceiling,
            Params {
                partitions: Some(1),
                ..Params::DEFAULT
            },
            false,
        ),
        noop(
            "amqp-noop-prefetch-100",
            "same with prefetch and max_in_flight 100 (untuned small window: batches adapt)",
            ceiling,
            Params {
                window: Some(100),
                ..Params::DEFAULT
            },
            false,
        ),
        raw(
            "amqp-raw-consume-1k",
            "size: raw lapin consumer, 1 KiB messages (100,000)",
            sized(1024, 100_000),
        ),
        noop(
            "amqp-noop-1k",
            "size: RabbitMQ -> Riverbed -> no-op, 1 KiB messages (100,000)",
            Some("amqp-raw-consume-1k"),
            sized(1024, 100_000),
            false,
        ),
        raw(
            "amqp-raw-consume-16k",
            "size: raw lapin consumer, 16 KiB messages (20,000)",
            sized(16 * 1024, 20_000),
        ),
        noop(
            "amqp-noop-16k",
            "size: RabbitMQ -> Riverbed -> no-op, 16 KiB messages (20,000)",
            Some("amqp-raw-consume-16k"),
            sized(16 * 1024, 20_000),
            false,
        ),
        noop(
            "amqp-noop-backlog-10k",
            "memory: RabbitMQ -> Riverbed -> no-op, prefetch 1000, backlog 10,000",
            None,
            backlog(10_000),
            false,
        ),
        noop(
            "amqp-noop-backlog-1m",
            "memory: RabbitMQ -> Riverbed -> no-op, prefetch 1000, backlog 1,000,000",
            None,
            backlog(1_000_000),
            false,
        ),
    ]
}
