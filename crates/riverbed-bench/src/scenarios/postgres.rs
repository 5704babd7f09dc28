//! RabbitMQ into PostgreSQL (and Redis): append, upsert with version check, counters; and the
//! PostgreSQL COPY ceiling for the same rows.

use std::sync::Arc;

use anyhow::Result;
use riverbed_core::Sink;
use riverbed_sql::PostgresSinkConfig;

use super::amqp::{fill, through, transaction};
use super::{Ctx, Params, Scenario};
use crate::measure::{Sample, timed};

/// The database.
pub const PG: &str = "postgres://postgres@127.0.0.1:5432/test";
/// Redis.
pub const REDIS: &str = "redis://127.0.0.1:6379";

const COLUMNS: &str = r#"columns = [
  { name = "id", type = "text", from = "/id" },
  { name = "provider", type = "text", from = "/provider" },
  { name = "amount", type = "numeric", from = "/amount" },
  { name = "currency", type = "text", from = "/currency" },
]"#;

async fn pg(config: String, name: &str) -> Result<Arc<dyn Sink>> {
    let c: PostgresSinkConfig = toml::from_str(&config)?;
    Ok(c.build(name).await?)
}

async fn drop_table(table: &str) -> Result<()> {
    let pool = sqlx::PgPool::connect(PG).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE IF EXISTS {table}")))
        .execute(&pool)
        .await?;
    pool.close().await;
    Ok(())
}

/// An idempotent append sink into this run's table.
pub async fn append(ctx: &Ctx) -> Result<Arc<dyn Sink>> {
    let table = ctx.unique("t");
    drop_table(&table).await?;
    pg(
        format!("connection = {{ url = \"{PG}\" }}\nmode = \"append\"\ntable = \"{table}\"\nkey = [\"id\"]\ncreate_table = true\n{COLUMNS}"),
        "history",
    )
    .await
}

/// The append sink keeping a per-provider totals table (count, sum) in the same transaction.
async fn append_with_totals(ctx: &Ctx) -> Result<Arc<dyn Sink>> {
    let table = ctx.unique("t");
    let totals = ctx.unique("totals");
    drop_table(&table).await?;
    drop_totals(&totals).await?;
    pg(
        format!("connection = {{ url = \"{PG}\" }}\nmode = \"append\"\ntable = \"{table}\"\nkey = [\"id\"]\ncreate_table = true\n{}\ntotals = {{ table = \"{totals}\", group = [\"provider\"], sum = {{ sum = \"amount\" }}, create_table = true }}", COLUMNS.replace("from = \"/provider\" }", "from = \"/provider\", required = true }")),
        "history",
    )
    .await
}

/// Drops a totals table and its seed record.
async fn drop_totals(totals: &str) -> Result<()> {
    drop_table(totals).await?;
    let pool = sqlx::PgPool::connect(PG).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DELETE FROM {} WHERE totals_table = $1",
        riverbed_sql::SEEDED_TABLE
    )))
    .bind(format!("\"{totals}\""))
    .execute(&pool)
    .await
    .ok();
    pool.close().await;
    Ok(())
}

async fn pg_append_totals(ctx: Ctx) -> Result<Sample> {
    let sink = append_with_totals(&ctx).await?;
    let sample = through(ctx.clone(), vec![("history", sink)]).await?;
    drop_totals(&ctx.unique("totals")).await?;
    finish(&ctx, sample).await
}

async fn upsert(ctx: &Ctx) -> Result<Arc<dyn Sink>> {
    let table = ctx.unique("t");
    drop_table(&table).await?;
    pg(
        format!(
            r#"connection = {{ url = "{PG}" }}
mode = "upsert"
table = "{table}"
key = ["provider"]
version = "seq"
create_table = true
columns = [
  {{ name = "provider", type = "text", from = "/provider" }},
  {{ name = "seq", type = "integer", from = "/seq" }},
  {{ name = "id", type = "text", from = "/id" }},
  {{ name = "amount", type = "numeric", from = "/amount" }},
]"#
        ),
        "latest",
    )
    .await
}

/// The deduplicated counter of this run. Its hash and markers are named after this process,
/// so a run soon after another never finds the earlier run's markers (which would skip every
/// increment and flatter the figures).
async fn counter(ctx: &Ctx) -> Result<Arc<dyn Sink>> {
    let key = counter_key(ctx);
    let c: riverbed_redis::HashIncrConfig = toml::from_str(&format!(
        "redis = {{ url = \"{REDIS}\" }}\nkey = \"{key}\"\nfield = \"/provider\"\namount = \"/amount\"\ndedup = {{ prefix = \"{key}:seen:\", ttl = \"2m\" }}"
    ))?;
    Ok(Arc::new(
        riverbed_redis::HashIncrSink::from_config("totals", &c).await?,
    ))
}

fn counter_key(ctx: &Ctx) -> String {
    format!("{}_{}", ctx.unique("totals"), std::process::id())
}

pub(super) async fn finish(ctx: &Ctx, sample: Sample) -> Result<Sample> {
    drop_table(&ctx.unique("t")).await?;
    Ok(sample)
}

async fn pg_append(ctx: Ctx) -> Result<Sample> {
    let sink = append(&ctx).await?;
    let sample = through(ctx.clone(), vec![("history", sink)]).await?;
    finish(&ctx, sample).await
}

async fn pg_redis(ctx: Ctx) -> Result<Sample> {
    let (history, totals) = (append(&ctx).await?, counter(&ctx).await?);
    let sample = through(ctx.clone(), vec![("history", history), ("totals", totals)]).await?;
    // The markers expire by themselves (2 minutes); the hash goes now.
    let mut redis = redis::Client::open(REDIS)?
        .get_multiplexed_async_connection()
        .await?;
    let _: () = redis::cmd("DEL")
        .arg(counter_key(&ctx))
        .query_async(&mut redis)
        .await?;
    finish(&ctx, sample).await
}

/// The ledger recipe's design: append, and Redis totals written from the committed table at
/// every (here: one-second) boundary by a window counter running alongside.
async fn pg_window(ctx: Ctx) -> Result<Sample> {
    use riverbed_redis::{RedisConfig, Totals, TotalsLayout, WindowCounter};
    let history = append(&ctx).await?;
    let layout = TotalsLayout::HashPerGroup {
        prefix: format!("{}:", ctx.unique("window")),
    };
    let (as_of, index) = (layout.as_of_key(), layout.index_key());
    let source = riverbed_sql::QueryTotals::new(
        sqlx::PgPool::connect(PG).await?,
        &format!(
            "SELECT provider, count(*) AS count, sum(amount) AS sum FROM {} GROUP BY provider",
            ctx.unique("t")
        ),
    );
    let totals = Totals::new(
        std::sync::Arc::new(source),
        RedisConfig::new(REDIS).connect().await?,
        layout,
    );
    let counter = WindowCounter::new("bench", totals, std::time::Duration::from_secs(1))?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(counter.run(async move {
        let _ = stopped.await;
    }));
    let sample = through(ctx.clone(), vec![("history", history)]).await?;
    let _ = stop.send(());
    task.await?;
    let mut redis = redis::Client::open(REDIS)?
        .get_multiplexed_async_connection()
        .await?;
    let mut keys: Vec<String> = redis::cmd("SMEMBERS")
        .arg(&index)
        .query_async(&mut redis)
        .await?;
    keys.extend([as_of, index]);
    let _: () = redis::cmd("DEL").arg(keys).query_async(&mut redis).await?;
    finish(&ctx, sample).await
}

/// The deduplicated Redis counter alone (no PostgreSQL), to tell its share of the
/// `amqp-pg-redis` latency from PostgreSQL's.
async fn redis_only(ctx: Ctx) -> Result<Sample> {
    let totals = counter(&ctx).await?;
    let sample = through(ctx.clone(), vec![("totals", totals)]).await?;
    let mut redis = redis::Client::open(REDIS)?
        .get_multiplexed_async_connection()
        .await?;
    let _: () = redis::cmd("DEL")
        .arg(counter_key(&ctx))
        .query_async(&mut redis)
        .await?;
    Ok(sample)
}

async fn pg_upsert(ctx: Ctx) -> Result<Sample> {
    let sink = upsert(&ctx).await?;
    let sample = through(ctx.clone(), vec![("latest", sink)]).await?;
    finish(&ctx, sample).await
}

/// The ceiling for writes: the same rows through `COPY ... FROM STDIN` in 10,000-row chunks.
async fn copy_ceiling(ctx: Ctx) -> Result<Sample> {
    let table = ctx.unique("t");
    drop_table(&table).await?;
    let pool = sqlx::PgPool::connect(PG).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {table} (id TEXT PRIMARY KEY, provider TEXT, amount NUMERIC, currency TEXT)"
    )))
    .execute(&pool)
    .await?;
    let n = ctx.messages();
    let rows: Vec<String> = (0..n)
        .map(|i| {
            let v: serde_json::Value =
                serde_json::from_slice(&transaction(i, ctx.params.size)).expect("JSON");
            format!(
                "{}\t{}\t{}\t{}\n",
                v["id"].as_str().unwrap_or(""),
                v["provider"].as_str().unwrap_or(""),
                v["amount"],
                v["currency"].as_str().unwrap_or("")
            )
        })
        .collect();
    let sample = timed(|| async {
        for chunk in rows.chunks(10_000) {
            let mut conn = pool.acquire().await?;
            let mut copy = conn
                .copy_in_raw(&format!("COPY {table} FROM STDIN"))
                .await?;
            copy.send(chunk.concat().into_bytes()).await?;
            copy.finish().await?;
        }
        Ok(n)
    })
    .await?;
    pool.close().await;
    drop_table(&table).await?;
    Ok(sample)
}

fn with(partitions: usize) -> Params {
    Params {
        partitions: Some(partitions),
        ..Params::DEFAULT
    }
}

/// The tuned settings of the PostgreSQL rows (chosen from the partition and window sweeps in
/// BENCHMARKS.md).
const TUNED: Params = Params {
    partitions: Some(1),
    ..Params::DEFAULT
};

type Run = fn(Ctx) -> futures::future::BoxFuture<'static, Result<Sample>>;

fn into_pg(
    name: &'static str,
    what: &'static str,
    params: Params,
    run: Run,
    latency: bool,
) -> Scenario {
    Scenario {
        name,
        what,
        ceiling: Some("amqp-raw-consume"),
        baseline: Some("naive-pg-redis"),
        params,
        prepare: |ctx| Box::pin(fill(ctx)),
        run,
        latency,
    }
}

/// The PostgreSQL scenarios.
pub fn scenarios() -> Vec<Scenario> {
    let append: Run = |ctx| Box::pin(pg_append(ctx));
    let redis: Run = |ctx| Box::pin(pg_redis(ctx));
    let upsert: Run = |ctx| Box::pin(pg_upsert(ctx));
    let mut v = vec![
        Scenario {
            name: "pg-copy-ceiling",
            what: "ceiling: the same rows with PostgreSQL COPY, 10,000-row chunks",
            ceiling: None,
            baseline: None,
            params: Params::DEFAULT,
            prepare: super::no_prepare,
            run: |ctx| Box::pin(copy_ceiling(ctx)),
            latency: false,
        },
        into_pg(
            "amqp-pg-append",
            "RabbitMQ -> Riverbed (defaults) -> PostgreSQL append (idempotent on id), at-least-once",
            Params::DEFAULT,
            append,
            true,
        ),
        into_pg(
            "amqp-pg-append-tuned",
            "same, tuned: 1 partition (one transaction at a time leaves the two cores to RabbitMQ and PostgreSQL)",
            TUNED,
            append,
            false,
        ),
        into_pg(
            "amqp-pg-append-totals",
            "RabbitMQ -> Riverbed (defaults) -> PostgreSQL append + per-provider totals table (count, sum) kept in the same transaction",
            Params::DEFAULT,
            |ctx| Box::pin(pg_append_totals(ctx)),
            true,
        ),
        into_pg(
            "amqp-pg-redis",
            "RabbitMQ -> Riverbed (defaults) -> PostgreSQL append + Redis counter (deduplicated), at-least-once",
            Params::DEFAULT,
            redis,
            true,
        ),
        {
            let mut s = into_pg(
                "amqp-redis-hash-incr",
                "RabbitMQ -> Riverbed (defaults) -> Redis counter (deduplicated) alone, no PostgreSQL: the counter's share of amqp-pg-redis",
                Params::DEFAULT,
                |ctx| Box::pin(redis_only(ctx)),
                true,
            );
            s.baseline = None;
            s
        },
        into_pg(
            "amqp-pg-redis-tuned",
            "same, tuned: 1 partition (one transaction at a time leaves the two cores to RabbitMQ and PostgreSQL)",
            TUNED,
            redis,
            false,
        ),
        into_pg(
            "amqp-pg-window",
            "RabbitMQ -> Riverbed (defaults) -> PostgreSQL append + Redis totals from the committed rows every second (the ledger recipe's window counter)",
            Params::DEFAULT,
            |ctx| Box::pin(pg_window(ctx)),
            true,
        ),
        into_pg(
            "amqp-pg-upsert",
            "RabbitMQ -> Riverbed (defaults) -> PostgreSQL upsert with version check (latest per provider)",
            Params::DEFAULT,
            upsert,
            true,
        ),
        into_pg(
            "amqp-pg-upsert-tuned",
            "same, tuned: 1 partition (one transaction at a time leaves the two cores to RabbitMQ and PostgreSQL)",
            TUNED,
            upsert,
            false,
        ),
    ];
    for (name, p) in [
        ("amqp-pg-append-p1", 1),
        ("amqp-pg-append-p2", 2),
        ("amqp-pg-append-p4", 4),
        ("amqp-pg-append-p8", 8),
    ] {
        let mut s = into_pg(
            name,
            "scaling: RabbitMQ -> PostgreSQL append with this many partitions",
            with(p),
            append,
            false,
        );
        s.baseline = None;
        v.push(s);
    }
    v
}
