//! Publishing: the raw lapin publisher with confirms (the ceiling) against Riverbed's AMQP sink
//! (confirms, `mandatory`, persistent) fed by an in-memory source.

use std::sync::Arc;

use anyhow::Result;
use bytes::Bytes;
use lapin::options::ConfirmSelectOptions;
use riverbed_amqp::{AmqpSink, AmqpSinkConfig};
use riverbed_core::{KeySpec, Message, Pipeline};

use super::amqp::{URL, channel, cleanup, declare, publish, transaction};
use super::runtime::CycleSource;
use super::{Ctx, Params, Scenario};
use crate::measure::{Sample, timed};

/// Declares this run's queue, empty (not measured).
async fn empty_queue(ctx: Ctx) -> Result<()> {
    let (conn, ch) = channel().await?;
    declare(&ch, &ctx.unique("q")).await?;
    conn.close(200, "OK".into()).await?;
    Ok(())
}

/// The ceiling: one channel, persistent messages, confirms waited for every 5,000.
async fn raw_publish(ctx: Ctx) -> Result<Sample> {
    let (conn, ch) = channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let (queue, n, size) = (ctx.unique("q"), ctx.messages(), ctx.params.size);
    let sample = timed(|| async {
        publish(&ch, &queue, 0..n, size, false).await?;
        Ok(n)
    })
    .await?;
    conn.close(200, "OK".into()).await?;
    cleanup(&ctx).await?;
    Ok(sample)
}

/// Riverbed: an in-memory source of the same messages -> AMQP sink into the same queue.
async fn sink_publish(ctx: Ctx) -> Result<Sample> {
    let pool = (0..4096u64)
        .map(|i| {
            let mut m = Message::new(Bytes::from(transaction(i, ctx.params.size)));
            m.meta.message_id = Some(format!("tx-{i}"));
            m.with_key(format!("provider-{}", i % 20))
        })
        .collect();
    let config: AmqpSinkConfig = toml::from_str(&format!(
        "urls = [\"{URL}\"]\nrouting_key = \"{}\"\n",
        ctx.unique("q")
    ))?;
    let sink = Arc::new(AmqpSink::new(config)?);
    sink.connect().await?;
    let n = ctx.messages();
    let sample = timed(|| async move {
        let report = Pipeline::builder()
            .source(CycleSource::from_pool(pool, n))
            .key(KeySpec::Source)
            .sink_with("publish", "main", sink, None)
            .build()?
            .run(std::future::pending())
            .await?;
        anyhow::ensure!(
            report.stats.acked == n,
            "acked {} of {n}",
            report.stats.acked
        );
        Ok(n)
    })
    .await?;
    cleanup(&ctx).await?;
    Ok(sample)
}

/// The publishing scenarios.
pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "amqp-raw-publish",
            what: "ceiling: raw lapin publisher, confirms (5,000 outstanding), persistent 100 B messages",
            ceiling: None,
            baseline: None,
            params: Params::DEFAULT,
            prepare: |ctx| Box::pin(empty_queue(ctx)),
            run: |ctx| Box::pin(raw_publish(ctx)),
            latency: false,
        },
        Scenario {
            name: "amqp-sink-publish",
            what: "in-memory source -> Riverbed AMQP sink (confirms per batch, mandatory, persistent)",
            ceiling: Some("amqp-raw-publish"),
            baseline: None,
            params: Params::DEFAULT,
            prepare: |ctx| Box::pin(empty_queue(ctx)),
            run: |ctx| Box::pin(sink_publish(ctx)),
            latency: false,
        },
    ]
}
