//! Ledger benchmark: a naive per-message consumer against a Riverbed pipeline, on the same
//! transactions, into the same PostgreSQL table and Redis counter; plus `UNNEST` against
//! multi-row `VALUES` for 500-row batches, the window counter's flush time, and the
//! `hash_incr` script against its previous version (`counter.rs`).
//!
//! Run: `cargo run --release -p riverbed-bench --example ledger_bench -- [N]` (default 100000)
//! with PostgreSQL (`postgres://postgres@127.0.0.1:5432/test`) and Redis on 127.0.0.1.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use riverbed_core::{Message, Pipeline, Sink};
use riverbed_embedded::{DataKind, Durability, EmbeddedLog, Generator, LogSource};
use riverbed_redis::{
    Amount, DedupConfig, HashIncrConfig, HashIncrSink, RedisConfig, Totals, TotalsLayout,
    WindowCounter,
};
use riverbed_sql::{
    Column, ColumnType, Ident, InsertStyle, PostgresWriter, TableSpec, ValueSource, WriteMode,
};

mod counter;

const PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
const REDIS_URL: &str = "redis://127.0.0.1:6379";

fn spec(table: &str) -> Arc<TableSpec> {
    let col = |n: &str, ty| Column {
        name: Ident::new(n).expect("valid"),
        ty,
        from: ValueSource::Pointer(format!("/{n}")),
        required: true,
    };
    Arc::new(TableSpec {
        table: vec![Ident::new(table).expect("valid")],
        columns: vec![
            col("id", ColumnType::Text),
            col("provider", ColumnType::Text),
            col("amount", ColumnType::Numeric),
        ],
        key: vec![Ident::new("id").expect("valid")],
        mode: WriteMode::Insert,
        create: true,
    })
}

async fn pool() -> sqlx::PgPool {
    let options: sqlx::postgres::PgConnectOptions = PG_URL.parse().expect("url");
    riverbed_sql::postgres_pool(
        options.application_name("riverbed-bench"),
        8,
        Duration::from_secs(10),
        Duration::from_secs(60),
    )
    .await
    .expect("PostgreSQL at 127.0.0.1:5432")
}

async fn reset(pool: &sqlx::PgPool, table: &str, redis_prefix: &str) {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP TABLE IF EXISTS \"{table}\""
    )))
    .execute(pool)
    .await
    .expect("drop");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE \"{table}\" (id TEXT PRIMARY KEY, provider TEXT NOT NULL, amount NUMERIC NOT NULL)"
    )))
    .execute(pool)
    .await
    .expect("create");
    reset_redis(redis_prefix).await;
}

/// Deletes the Redis keys starting with `prefix`.
async fn reset_redis(prefix: &str) {
    let mut c = redis::Client::open(REDIS_URL)
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("Redis at 127.0.0.1:6379");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut c)
        .await
        .expect("keys");
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL")
            .arg(keys)
            .query_async(&mut c)
            .await
            .expect("del");
    }
}

fn transactions(n: u64) -> Vec<riverbed_embedded::Record> {
    let mut g = Generator::new(DataKind::Transactions, 7, 20, None);
    (0..n).map(|_| g.next_record()).collect()
}

/// One message at a time: INSERT, then HINCRBYFLOAT, each awaited.
async fn naive(pool: &sqlx::PgPool, n: u64) -> f64 {
    let table = "bench_naive";
    reset(pool, table, "bench:naive").await;
    let mut redis = redis::Client::open(REDIS_URL)
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let started = Instant::now();
    for r in transactions(n) {
        let v: serde_json::Value = serde_json::from_slice(&r.payload).expect("json");
        let amount = v["amount"].to_string();
        sqlx::query("INSERT INTO bench_naive (id, provider, amount) VALUES ($1, $2, $3::numeric) ON CONFLICT DO NOTHING")
            .bind(v["id"].as_str())
            .bind(v["provider"].as_str())
            .bind(&amount)
            .execute(pool)
            .await
            .expect("insert");
        let _: f64 = redis::cmd("HINCRBYFLOAT")
            .arg("bench:naive:sum")
            .arg(v["provider"].as_str())
            .arg(&amount)
            .query_async(&mut redis)
            .await
            .expect("hincrbyfloat");
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// Embedded log -> pipeline -> PostgreSQL append + deduplicated Redis counter.
async fn riverbed(pool: &sqlx::PgPool, n: u64) -> f64 {
    let table = "bench_riverbed";
    reset(pool, table, "bench:rb").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let log = EmbeddedLog::open(dir.path().join("log.db"), Durability::Normal)
        .await
        .expect("log");
    let records = transactions(n);
    for chunk in records.chunks(10_000) {
        log.append("tx", chunk.to_vec()).await.expect("append");
    }
    let source = LogSource::open(&log, "tx", "bench", false)
        .await
        .expect("source");
    let ledger = PostgresWriter::new(pool.clone(), spec(table), None, InsertStyle::Unnest)
        .await
        .expect("writer")
        .into_sink("ledger");
    let counter = HashIncrSink::from_config(
        "counter",
        &HashIncrConfig {
            redis: RedisConfig::new(REDIS_URL),
            key: "bench:rb:sum".into(),
            field: "/provider".into(),
            amount: "/amount".into(),
            kind: Amount::Float,
            dedup: DedupConfig {
                id: "/id".into(),
                prefix: Some("bench:rb:seen:".into()),
                ..DedupConfig::default()
            },
        },
    )
    .await
    .expect("redis sink");
    let pipeline = Pipeline::builder()
        .source(source)
        .partitions(NonZeroUsize::new(4).expect("4"))
        .max_in_flight(NonZeroUsize::new(8192).expect("8192"))
        .sink("ledger", ledger)
        .sink("counter", counter)
        .build()
        .expect("pipeline");
    let started = Instant::now();
    let report = pipeline.run(std::future::pending()).await.expect("run");
    let rate = n as f64 / started.elapsed().as_secs_f64();
    assert_eq!(report.stats.acked, n, "every message acknowledged");
    rate
}

/// Rows per second of 500-row batches written directly, in each insert style.
async fn insert_styles(pool: &sqlx::PgPool) -> Vec<(InsertStyle, f64)> {
    let mut g = Generator::new(DataKind::Transactions, 9, 20, None);
    let batches: Vec<Vec<Message>> = (0..100)
        .map(|_| {
            (0..500)
                .map(|_| {
                    let r = g.next_record();
                    Message::new(r.payload)
                })
                .collect()
        })
        .collect();
    let mut out = Vec::new();
    for style in [
        InsertStyle::Values,
        InsertStyle::Unnest,
        InsertStyle::Values,
        InsertStyle::Unnest,
    ] {
        let table = "bench_styles";
        reset(pool, table, "bench:styles").await;
        let sink = PostgresWriter::new(pool.clone(), spec(table), None, style)
            .await
            .expect("writer")
            .into_sink("styles");
        let started = Instant::now();
        for b in &batches {
            assert!(sink.write(b).await == riverbed_core::BatchOutcome::Committed);
        }
        out.push((style, 50_000.0 / started.elapsed().as_secs_f64()));
    }
    out.drain(..2);
    out
}

#[tokio::main]
async fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("N is a number"))
        .unwrap_or(100_000);
    let pool = pool().await;
    let naive_n = (n / 10).clamp(1000, 10_000);
    let naive_rate = naive(&pool, naive_n).await;
    let riverbed_rate = riverbed(&pool, n).await;
    let styles = insert_styles(&pool).await;
    let totals = Totals::new(
        Arc::new(riverbed_sql::QueryTotals::new(
            pool.clone(),
            "SELECT provider, count(*) AS count, sum(amount) AS sum FROM bench_riverbed GROUP BY provider",
        )),
        RedisConfig::new(REDIS_URL).connect().await.expect("redis"),
        TotalsLayout::HashPerGroup {
            prefix: "bench:rb:totals:".into(),
        },
    );
    let counter = WindowCounter::new("bench", totals, Duration::from_secs(60)).expect("counter");
    let flush = counter.flush(SystemTime::now()).await.expect("flush");
    let counted = (n as usize).min(50_000);
    let (previous, current) = counter::compare(counted).await;

    println!("| consumer | messages | msg/s |");
    println!("|---|---:|---:|");
    println!("| naive (INSERT + HINCRBYFLOAT per message) | {naive_n} | {naive_rate:.0} |");
    println!(
        "| Riverbed (embedded log -> PostgreSQL append + Redis counter, dedup on) | {n} | {riverbed_rate:.0} |"
    );
    println!("| **ratio** | | **{:.1}x** |", riverbed_rate / naive_rate);
    println!();
    println!("| 500-row batches into PostgreSQL | rows/s |");
    println!("|---|---:|");
    for (style, rate) in styles {
        println!("| {style:?} | {rate:.0} |");
    }
    println!();
    println!(
        "Window counter flush over {n} committed rows ({} groups): {:.1} ms",
        flush.groups,
        flush.lateness.as_secs_f64() * 1000.0
    );
    println!();
    println!(
        "| hash_incr script, {counted} messages, 500 per batch, dedup on | msg/s | Redis µs per batch | commands per batch | bytes per marker |"
    );
    println!("|---|---:|---:|---:|---:|");
    for (name, r) in [
        ("previous (EXISTS + HINCRBY + SET each)", previous),
        ("grouped (SET NX each, HINCRBY per group)", current),
    ] {
        println!(
            "| {name} | {:.0} | {:.0} | {:.0} | {:.0} |",
            r.rate, r.script_usec_per_batch, r.commands_per_batch, r.bytes_per_marker
        );
    }
}
