//! The job's own ceiling: RabbitMQ -> PostgreSQL append written by hand the way an expert
//! would without Riverbed, measured in the same run as Riverbed's PostgreSQL rows. lapin with
//! the same prefetch (4096), the deliveries that are ready (up to 1,000) parsed and written as
//! one `INSERT ... SELECT FROM UNNEST(...) ON CONFLICT (id) DO NOTHING` (one round trip, one
//! transaction), then `basic_ack` with `multiple` on the batch's last delivery tag after the
//! commit. The next batch is read and parsed while the previous one is written (one write in
//! flight, so acks stay in order). Best effort: no retries, no dead letters, no per-key
//! ordering across failures, no backpressure beyond prefetch.

use std::time::Duration;

use anyhow::{Context, Result};
use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use sqlx::PgPool;

use super::amqp::{DEFAULT_PREFETCH, channel, cleanup, fill};
use super::postgres::PG;
use super::{Ctx, Params, Scenario};
use crate::measure::{Sample, timed};

/// Most rows per batch.
const BATCH: usize = 1000;

/// One batch's columns, and the delivery tag to acknowledge after its commit.
#[derive(Default)]
struct Batch {
    ids: Vec<String>,
    providers: Vec<String>,
    amounts: Vec<String>,
    currencies: Vec<String>,
    last_tag: u64,
}

impl Batch {
    fn push(&mut self, body: &[u8], tag: u64) -> Result<()> {
        let v: serde_json::Value = serde_json::from_slice(body)?;
        self.ids.push(v["id"].as_str().context("id")?.to_owned());
        self.providers
            .push(v["provider"].as_str().context("provider")?.to_owned());
        self.amounts.push(v["amount"].to_string());
        self.currencies
            .push(v["currency"].as_str().unwrap_or_default().to_owned());
        self.last_tag = tag;
        Ok(())
    }

    fn len(&self) -> usize {
        self.ids.len()
    }
}

async fn write(pool: &PgPool, table: &str, b: &Batch) -> Result<()> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {table} (id, provider, amount, currency) \
         SELECT i, p, a::numeric, c FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[]) \
         AS u(i, p, a, c) ON CONFLICT (id) DO NOTHING"
    )))
    .bind(&b.ids)
    .bind(&b.providers)
    .bind(&b.amounts)
    .bind(&b.currencies)
    .execute(pool)
    .await?;
    Ok(())
}

async fn handwritten(ctx: Ctx) -> Result<Sample> {
    let n = ctx.messages();
    let table = ctx.unique("t");
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(PG)
        .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP TABLE IF EXISTS {table}; "
    )))
    .execute(&pool)
    .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {table} (id TEXT PRIMARY KEY, provider TEXT, amount NUMERIC, currency TEXT)"
    )))
    .execute(&pool)
    .await?;
    let (conn, ch) = channel().await?;
    ch.basic_qos(u16::try_from(DEFAULT_PREFETCH)?, BasicQosOptions::default())
        .await?;
    let mut consumer = ch
        .basic_consume(
            ctx.unique("q").as_str().into(),
            "handwritten".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let sample = timed(|| async {
        let mut seen = 0u64;
        let mut writing: Option<tokio::task::JoinHandle<Result<()>>> = None;
        while seen < n {
            // Block for the first delivery, then take what is ready, up to BATCH.
            let mut batch = Batch::default();
            let first = consumer.next().await.context("consumer ended")??;
            batch.push(&first.data, first.delivery_tag)?;
            while batch.len() < BATCH && seen + (batch.len() as u64) < n {
                match tokio::time::timeout(Duration::ZERO, consumer.next()).await {
                    Ok(Some(d)) => {
                        let d = d?;
                        batch.push(&d.data, d.delivery_tag)?;
                    }
                    _ => break,
                }
            }
            seen += batch.len() as u64;
            if let Some(previous) = writing.take() {
                previous.await??;
            }
            let (pool, table, ch) = (pool.clone(), table.clone(), ch.clone());
            writing = Some(tokio::spawn(async move {
                write(&pool, &table, &batch).await?;
                ch.basic_ack(batch.last_tag, BasicAckOptions { multiple: true })
                    .await?;
                Ok(())
            }));
        }
        if let Some(last) = writing {
            last.await??;
        }
        Ok(seen)
    })
    .await?;
    conn.close(200, "OK".into()).await?;
    cleanup(&ctx).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE IF EXISTS {table}")))
        .execute(&pool)
        .await?;
    Ok(sample)
}

/// The hand-written reference.
pub fn scenarios() -> Vec<Scenario> {
    vec![Scenario {
        name: "amqp-pg-handwritten",
        what: "reference: hand-written lapin consumer (prefetch 4096) -> one UNNEST insert per ready batch (<= 1,000) -> ack multiple after commit; one write in flight while the next batch is read; best effort",
        ceiling: Some("amqp-raw-consume"),
        baseline: None,
        params: Params::DEFAULT,
        prepare: |ctx| Box::pin(fill(ctx)),
        run: |ctx| Box::pin(handwritten(ctx)),
        latency: false,
    }]
}
