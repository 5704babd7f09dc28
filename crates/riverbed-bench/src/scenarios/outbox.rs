//! The outbox relay: rows of a PostgreSQL outbox published to RabbitMQ with confirms and
//! marked sent, against the raw confirming publisher (`amqp-raw-publish`) of the same run.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use riverbed_amqp::{AmqpSink, AmqpSinkConfig};
use riverbed_core::{KeySpec, Pipeline};
use riverbed_sql::{OutboxSource, OutboxTable, PostgresOutboxConfig};
use sqlx::PgPool;

use super::amqp::{URL, channel, cleanup, declare};
use super::postgres::PG;
use super::{Ctx, Params, Scenario};
use crate::measure::{Sample, timed};

/// Entities the rows are spread over (each entity's rows are relayed in version order).
const ENTITIES: u64 = 1000;

fn table(ctx: &Ctx) -> String {
    ctx.unique("outbox")
}

/// Drops and creates the outbox, fills it with the run's rows (versions consecutive per
/// entity, as `Outbox::enqueue` assigns them), declares the queue (not measured).
async fn prepare(ctx: Ctx) -> Result<()> {
    let pool = PgPool::connect(PG).await?;
    let t = table(&ctx);
    drop_outbox(&pool, &t).await?;
    OutboxTable::new(&t)?.create(&pool).await?;
    let payload = "x".repeat(ctx.params.size.saturating_sub(40));
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {t} (entity, version, message_id, payload) \
         SELECT 'entity-' || (i % $2), i / $2 + 1, 'm-' || i, \
           convert_to('{{\"i\":' || i || ',\"pad\":\"' || $3 || '\"}}', 'UTF8') \
         FROM generate_series(0, $1 - 1) AS i"
    )))
    .bind(ctx.messages() as i64)
    .bind(ENTITIES as i64)
    .bind(payload)
    .execute(&pool)
    .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("ANALYZE {t}")))
        .execute(&pool)
        .await?;
    pool.close().await;
    let (conn, ch) = channel().await?;
    declare(&ch, &ctx.unique("q")).await?;
    conn.close(200, "OK".into()).await?;
    Ok(())
}

async fn drop_outbox(pool: &PgPool, t: &str) -> Result<()> {
    for suffix in ["", "_versions", "_dead_letters"] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP TABLE IF EXISTS {t}{suffix}"
        )))
        .execute(pool)
        .await?;
    }
    Ok(())
}

/// Waits until every row of `t` is marked sent.
async fn all_marked(pool: PgPool, t: String) {
    let sql = format!("SELECT EXISTS (SELECT 1 FROM {t} WHERE sent_at IS NULL)");
    loop {
        match sqlx::query_scalar::<_, bool>(sqlx::AssertSqlSafe(sql.as_str()))
            .fetch_one(&pool)
            .await
        {
            Ok(false) => return,
            Ok(true) => {}
            Err(e) => eprintln!("checking the outbox: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The relay: outbox source -> AMQP sink (confirms, mandatory, persistent) into the queue,
/// timed until every row is published, confirmed and marked sent.
async fn relay(ctx: Ctx) -> Result<Sample> {
    let t = table(&ctx);
    let mut config: PostgresOutboxConfig = toml::from_str(&format!(
        "table = \"{t}\"\nconnection = {{ url = \"{PG}\" }}"
    ))?;
    config.create_table = false;
    let source = OutboxSource::open(config).await?;
    let sink_config: AmqpSinkConfig = toml::from_str(&format!(
        "urls = [\"{URL}\"]\nrouting_key = \"{}\"\n",
        ctx.unique("q")
    ))?;
    let sink = Arc::new(AmqpSink::new(sink_config)?);
    sink.connect().await?;
    let watch = PgPool::connect(PG).await?;
    let n = ctx.messages();
    let sample = timed(|| async move {
        let report = Pipeline::builder()
            .source(source)
            .key(KeySpec::Source)
            .sink_with("publish", "main", sink, None)
            .build()?
            .run(all_marked(watch, t.clone()))
            .await?;
        anyhow::ensure!(
            report.stats.acked >= n,
            "acked {} of {n}",
            report.stats.acked
        );
        Ok(n)
    })
    .await?;
    cleanup(&ctx).await?;
    let pool = PgPool::connect(PG).await?;
    drop_outbox(&pool, &table(&ctx)).await?;
    Ok(sample)
}

/// The outbox scenarios.
pub fn scenarios() -> Vec<Scenario> {
    vec![Scenario {
        name: "outbox-relay",
        what: "PostgreSQL outbox (1,000 entities, per-entity claims) -> AMQP sink (confirms, mandatory, persistent), rows marked sent",
        ceiling: Some("amqp-raw-publish"),
        baseline: None,
        params: Params::DEFAULT,
        prepare: |ctx| Box::pin(prepare(ctx)),
        run: |ctx| Box::pin(relay(ctx)),
        latency: false,
    }]
}
