//! The naive consumer people write by hand: one message at a time, INSERT, HINCRBYFLOAT, ack.

use anyhow::Result;
use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};

use super::amqp::{URL, cleanup, fill};
use super::postgres::{PG, REDIS};
use super::{Ctx, Params, Scenario};
use crate::measure::{Sample, timed};

async fn naive(ctx: Ctx) -> Result<Sample> {
    let n = ctx.messages();
    let table = ctx.unique("t");
    let pool = sqlx::PgPool::connect(PG).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE IF EXISTS {table}")))
        .execute(&pool)
        .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {table} (id TEXT PRIMARY KEY, provider TEXT, amount NUMERIC, currency TEXT)"
    )))
    .execute(&pool)
    .await?;
    let mut redis = redis::Client::open(REDIS)?
        .get_multiplexed_async_connection()
        .await?;
    let key = ctx.unique("totals");
    let conn = Connection::connect(URL, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    ch.basic_qos(100, BasicQosOptions::default()).await?;
    let mut consumer = ch
        .basic_consume(
            ctx.unique("q").as_str().into(),
            "naive".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let insert = format!(
        "INSERT INTO {table} (id, provider, amount, currency) VALUES ($1, $2, $3::numeric, $4) ON CONFLICT DO NOTHING"
    );
    let sample = timed(|| async {
        let mut seen = 0;
        while let Some(d) = consumer.next().await {
            let d = d?;
            let v: serde_json::Value = serde_json::from_slice(&d.data)?;
            let amount = v["amount"].as_f64().unwrap_or(0.0);
            sqlx::query(sqlx::AssertSqlSafe(insert.clone()))
                .bind(v["id"].as_str())
                .bind(v["provider"].as_str())
                .bind(amount.to_string())
                .bind(v["currency"].as_str())
                .execute(&pool)
                .await?;
            let _: f64 = redis::cmd("HINCRBYFLOAT")
                .arg(&key)
                .arg(v["provider"].as_str())
                .arg(amount)
                .query_async(&mut redis)
                .await?;
            ch.basic_ack(d.delivery_tag, BasicAckOptions::default())
                .await?;
            seen += 1;
            if seen == n {
                break;
            }
        }
        Ok(seen)
    })
    .await?;
    conn.close(200, "OK".into()).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE IF EXISTS {table}")))
        .execute(&pool)
        .await?;
    let _: () = redis::cmd("DEL").arg(&key).query_async(&mut redis).await?;
    cleanup(&ctx).await?;
    Ok(sample)
}

/// The naive baseline.
pub fn scenarios() -> Vec<Scenario> {
    vec![Scenario {
        name: "naive-pg-redis",
        what: "baseline: hand-written consumer, per message INSERT (autocommit) + HINCRBYFLOAT + ack (at most 5,000 messages)",
        ceiling: Some("amqp-raw-consume"),
        baseline: None,
        params: Params {
            count: Some(5000),
            ..Params::DEFAULT
        },
        prepare: |ctx| Box::pin(fill(ctx)),
        run: |ctx| Box::pin(naive(ctx)),
        latency: false,
    }]
}
