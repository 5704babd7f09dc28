//! NATS JetStream: a raw async-nats pull consumer as the ceiling, and Riverbed's source into a
//! no-op sink and into PostgreSQL, with the same pull batch, `max_ack_pending` and explicit per-message acks.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use riverbed_core::{KeySpec, NoopSink, Pipeline, Sink};
use riverbed_nats::{NatsSource, NatsSourceConfig};

use super::amqp::transaction;
use super::{Ctx, Params, Scenario};
use crate::measure::{Sample, timed};

/// The server.
pub const URL: &str = "nats://127.0.0.1:4222";
/// Messages asked for in one pull request, by both consumers (Riverbed's default `batch`).
const BATCH: usize = 256;
/// Unacknowledged deliveries the server hands out, for both (Riverbed's default).
const MAX_ACK_PENDING: usize = 4096;

async fn context() -> Result<jetstream::Context> {
    let client = async_nats::connect(URL)
        .await
        .context("NATS on 127.0.0.1:4222")?;
    Ok(jetstream::new(client))
}

/// Creates this run's stream afresh and fills it (not measured).
async fn fill(ctx: Ctx) -> Result<()> {
    let js = context().await?;
    let name = ctx.unique("s");
    let _ = js.delete_stream(&name).await;
    js.create_stream(stream::Config {
        name: name.clone(),
        subjects: vec![format!("{name}.>")],
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await?;
    let mut acks = Vec::with_capacity(5000);
    for i in 0..ctx.messages() {
        let mut h = async_nats::HeaderMap::new();
        h.insert("Nats-Msg-Id", format!("tx-{i}").as_str());
        let body = transaction(i, ctx.params.size);
        let subject = format!("{name}.p{}", i % 20);
        acks.push(js.publish_with_headers(subject, h, body.into()).await?);
        if acks.len() == 5000 {
            for a in acks.drain(..) {
                a.await?;
            }
        }
    }
    for a in acks {
        a.await?;
    }
    Ok(())
}

/// Deletes this run's streams.
async fn cleanup(ctx: &Ctx) -> Result<()> {
    let js = context().await?;
    let name = ctx.unique("s");
    let _ = js.delete_stream(&name).await;
    let _ = js.delete_stream(format!("{name}_dlq")).await;
    Ok(())
}

/// The window of this run: the scenario's, else the default.
fn window(ctx: &Ctx) -> usize {
    ctx.params.window.unwrap_or(MAX_ACK_PENDING)
}

/// The ceiling: an async-nats durable pull consumer, explicit ack of each message as it comes.
async fn raw_consume(ctx: Ctx) -> Result<Sample> {
    let n = ctx.messages();
    let js = context().await?;
    let stream = js.get_stream(ctx.unique("s")).await?;
    let consumer: consumer::PullConsumer = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some("raw".into()),
            ack_policy: consumer::AckPolicy::Explicit,
            max_ack_pending: i64::try_from(window(&ctx))?,
            ..Default::default()
        })
        .await?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(BATCH.min(window(&ctx)))
        .expires(Duration::from_secs(30))
        .heartbeat(Duration::from_secs(5))
        .messages()
        .await?;
    let sample = timed(|| async {
        let mut seen = 0;
        while let Some(m) = messages.next().await {
            m.map_err(|e| anyhow::anyhow!("{e}"))?
                .ack()
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            seen += 1;
            if seen == n {
                break;
            }
        }
        js.client().flush().await?;
        Ok(seen)
    })
    .await?;
    cleanup(&ctx).await?;
    Ok(sample)
}

/// Riverbed: the NATS source, keyed by `/provider`, into `sink`.
async fn through(ctx: &Ctx, sink: Arc<dyn Sink>) -> Result<Sample> {
    let n = ctx.messages();
    let w = window(ctx);
    let config: NatsSourceConfig = toml::from_str(&format!(
        "servers = [\"{URL}\"]\nstream = \"{}\"\ndurable = \"riverbed\"\nbatch = {}\n\
         max_ack_pending = {w}\n",
        ctx.unique("s"),
        BATCH.min(w)
    ))?;
    let mut builder = Pipeline::builder()
        .source(NatsSource::new(config)?)
        .key(KeySpec::JsonPointer("/provider".into()))
        .max_in_flight(w.try_into()?)
        .sink_with("out", "main", sink, None);
    if let Some(p) = ctx.params.partitions {
        builder = builder.partitions(p.try_into()?);
    }
    let pipeline = builder.build()?;
    let stats = pipeline.stats();
    let sample = timed(|| async move {
        let done = async move {
            while stats.snapshot().acked < n {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        };
        let report = pipeline.run(done).await?;
        Ok(report.stats.acked)
    })
    .await?;
    cleanup(ctx).await?;
    Ok(sample)
}

/// Riverbed: the NATS source into a no-op sink.
async fn noop(ctx: Ctx) -> Result<Sample> {
    through(&ctx, Arc::new(NoopSink)).await
}

/// Riverbed: the NATS source into the PostgreSQL append sink of the RabbitMQ rows.
async fn pg_append(ctx: Ctx) -> Result<Sample> {
    let sink = super::postgres::append(&ctx).await?;
    let sample = through(&ctx, sink).await?;
    super::postgres::finish(&ctx, sample).await
}

/// The NATS scenarios.
pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "nats-raw-consume",
            what: "ceiling: raw async-nats pull consumer, batch 256, max_ack_pending 4096, explicit ack per message, 100 B messages",
            ceiling: None,
            baseline: None,
            params: Params::DEFAULT,
            prepare: |ctx| Box::pin(fill(ctx)),
            run: |ctx| Box::pin(raw_consume(ctx)),
            latency: false,
        },
        Scenario {
            name: "nats-noop",
            what: "NATS JetStream -> Riverbed (defaults, keyed by /provider) -> no-op sink, same pull and ack settings",
            ceiling: Some("nats-raw-consume"),
            baseline: None,
            params: Params::DEFAULT,
            prepare: |ctx| Box::pin(fill(ctx)),
            run: |ctx| Box::pin(noop(ctx)),
            latency: false,
        },
        Scenario {
            name: "nats-pg-append",
            what: "NATS JetStream -> Riverbed (defaults) -> PostgreSQL append (idempotent on id), the rows of amqp-pg-append",
            ceiling: Some("nats-raw-consume"),
            baseline: None,
            params: Params::DEFAULT,
            prepare: |ctx| Box::pin(fill(ctx)),
            run: |ctx| Box::pin(pg_append(ctx)),
            latency: false,
        },
    ]
}
