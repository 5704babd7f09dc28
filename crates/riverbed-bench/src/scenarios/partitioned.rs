//! `partitioned` mode: a backlog behind the consistent-hash exchange, spread over partition
//! queues with a single active consumer each, drained by 1, 2 or 3 instances (each its own
//! connection and pipeline, in one process) into a no-op sink. Compared with the plain
//! single-queue pipeline of the `amqp-noop` row; on one 2-core machine the instances share the
//! same CPUs, so the rows show the cost of partitioning, not the scale-out of several machines.

use anyhow::Result;
use lapin::BasicProperties;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use riverbed_amqp::{AmqpSource, AmqpSourceConfig};
use riverbed_core::{KeySpec, NoopSink, Pipeline};

use super::amqp::{URL, channel, transaction};
use super::{Ctx, Params, Scenario};
use crate::measure::{Sample, timed};

/// Partition queues: more than the most instances measured.
const PARTITIONS: u16 = 6;

/// The three rows.
pub fn scenarios() -> Vec<Scenario> {
    vec![
        row(
            "amqp-partitioned-1",
            "1 instance, 6 partition queues -> no-op",
            |c| Box::pin(drain(c, 1)),
        ),
        row(
            "amqp-partitioned-2",
            "2 instances sharing 6 partition queues -> no-op",
            |c| Box::pin(drain(c, 2)),
        ),
        row(
            "amqp-partitioned-3",
            "3 instances sharing 6 partition queues -> no-op",
            |c| Box::pin(drain(c, 3)),
        ),
    ]
}

fn row(
    name: &'static str,
    what: &'static str,
    run: fn(Ctx) -> futures::future::BoxFuture<'static, Result<Sample>>,
) -> Scenario {
    Scenario {
        name,
        what,
        ceiling: None,
        baseline: None,
        params: Params::DEFAULT,
        prepare: |ctx| Box::pin(fill(ctx)),
        run,
        latency: false,
    }
}

fn source(ctx: &Ctx) -> Result<AmqpSource> {
    let config: AmqpSourceConfig = toml::from_str(&format!(
        "urls = [\"{URL}\"]\nqueue = \"{}\"\n",
        ctx.unique("q")
    ))?;
    Ok(AmqpSource::partitioned(
        config,
        PARTITIONS.try_into().expect("non-zero"),
    )?)
}

/// Declares the exchange and partition queues, then publishes the backlog to the exchange
/// keyed by provider (not measured).
async fn fill(ctx: Ctx) -> Result<()> {
    let s = source(&ctx)?;
    // The source is not `Sync`: declare on this thread rather than across an await.
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(s.declare()))?;
    drop(s);
    let (conn, ch) = channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let exchange = ctx.unique("q");
    for i in 0..ctx.messages() {
        // 1,000 keys, so that every partition gets its share.
        let key = format!("provider-{}", i % 1000);
        drop(
            ch.basic_publish(
                exchange.as_str().into(),
                key.as_str().into(),
                BasicPublishOptions::default(),
                &transaction(i, ctx.params.size),
                BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_message_id(format!("tx-{i}").into()),
            )
            .await?,
        );
        if i % 5000 == 4999 {
            ch.wait_for_confirms().await?;
        }
    }
    ch.wait_for_confirms().await?;
    conn.close(200, "OK".into()).await?;
    Ok(())
}

/// Drains the backlog with `instances` pipelines started together; stops them when their
/// acknowledgements add up to the backlog.
async fn drain(ctx: Ctx, instances: usize) -> Result<Sample> {
    let n = ctx.messages();
    let mut pipelines = Vec::new();
    for _ in 0..instances {
        let pipeline = Pipeline::builder()
            .source(source(&ctx)?)
            .key(KeySpec::Subject)
            .sink("noop", NoopSink)
            .build()?;
        pipelines.push(pipeline);
    }
    let stats: Vec<_> = pipelines.iter().map(|p| p.stats()).collect();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let sample = timed(|| async move {
        let runs: Vec<_> = pipelines
            .into_iter()
            .map(|p| {
                let mut stopped = stopped.clone();
                tokio::spawn(async move {
                    p.run(async move {
                        let _ = stopped.wait_for(|s| *s).await;
                    })
                    .await
                })
            })
            .collect();
        let acked = || stats.iter().map(|s| s.snapshot().acked).sum::<u64>();
        while acked() < n {
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        let _ = stop.send(true);
        for r in runs {
            r.await??;
        }
        Ok(acked())
    })
    .await?;
    cleanup(&ctx).await?;
    Ok(sample)
}

/// Deletes the partition queues, their dead-letter queue and the exchange.
async fn cleanup(ctx: &Ctx) -> Result<()> {
    let (conn, ch) = channel().await?;
    let q = ctx.unique("q");
    let mut queues: Vec<String> = (0..PARTITIONS).map(|p| format!("{q}.{p}")).collect();
    queues.push(format!("{q}.dlq"));
    for queue in queues {
        ch.queue_delete(queue.as_str().into(), Default::default())
            .await?;
    }
    ch.exchange_delete(q.as_str().into(), Default::default())
        .await?;
    conn.close(200, "OK".into()).await?;
    Ok(())
}
