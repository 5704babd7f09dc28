//! Window-counter flush lateness against the size of the history: at each size, the counter
//! flushes per-provider totals to Redis at every boundary, once reading them with a `GROUP BY`
//! over the whole history (the scan) and once from the totals table the append sink keeps
//! (seeded here by the sink's own one-time seed, whose duration is reported too). Lateness is
//! the time from the boundary to Redis answering the write, as the counter measures it.
//!
//! Run (PostgreSQL and Redis on 127.0.0.1; the history table is grown with `INSERT ... SELECT
//! generate_series`, vacuumed, and dropped at the end):
//! `cargo run --release -p riverbed-bench --example flush_lateness -- 1000000,10000000,30000000 15`

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use riverbed_redis::{RedisConfig, Totals, TotalsLayout, WindowCounter};
use riverbed_sql::{
    Column, ColumnType, Ident, QueryTotals, SEEDED_TABLE, TableSpec, TotalsTableConfig,
    ValueSource, WriteMode, seed_once,
};

const PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
const REDIS_URL: &str = "redis://127.0.0.1:6379";
const HISTORY: &str = "bench_lateness_history";
const TOTALS: &str = "bench_lateness_totals";
const EVERY: Duration = Duration::from_secs(2);

async fn exec(pool: &sqlx::PgPool, sql: &str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

fn sink_spec() -> TableSpec {
    let col = |n: &str, ty| Column {
        name: Ident::new(n).expect("valid"),
        ty,
        from: ValueSource::Pointer(format!("/{n}")),
        required: true,
    };
    TableSpec {
        table: vec![Ident::new(HISTORY).expect("valid")],
        columns: vec![
            col("id", ColumnType::Text),
            col("provider", ColumnType::Text),
            col("amount", ColumnType::Numeric),
        ],
        key: vec![Ident::new("id").expect("valid")],
        mode: WriteMode::Insert,
        create: false,
    }
}

/// Grows the history to `to` rows (ledger-like: 20 providers, amounts in cents).
async fn grow(pool: &sqlx::PgPool, from: u64, to: u64) {
    exec(pool, &format!(
        "INSERT INTO {HISTORY} SELECT 'tx-' || g, 'provider-' || (g % 20), ((g::bigint * 7919) % 100000 + 1) / 100.0 \
         FROM generate_series({}, {to}) g",
        from + 1
    ))
    .await;
    exec(pool, &format!("VACUUM (ANALYZE) {HISTORY}")).await;
}

/// Seeds the totals table again from the whole history, as the sink's first start does;
/// returns how long it took.
async fn seed(pool: &sqlx::PgPool) -> u64 {
    let cfg: TotalsTableConfig = toml::from_str(&format!(
        "table = \"{TOTALS}\"\ngroup = [\"provider\"]\nsum = {{ sum = \"amount\" }}\ncreate_table = true"
    ))
    .expect("config");
    let spec = cfg.spec(&sink_spec()).expect("spec");
    exec(pool, &spec.create_table()).await;
    exec(pool, &format!("CREATE TABLE IF NOT EXISTS {SEEDED_TABLE} (totals_table TEXT PRIMARY KEY, source_table TEXT NOT NULL, source_rows BIGINT NOT NULL, took_ms BIGINT NOT NULL, seeded_at TIMESTAMPTZ NOT NULL DEFAULT now())")).await;
    exec(
        pool,
        &format!("DELETE FROM {SEEDED_TABLE} WHERE totals_table = '\"{TOTALS}\"'"),
    )
    .await;
    match seed_once(pool, &spec, &format!("\"{HISTORY}\""))
        .await
        .expect("seed")
    {
        riverbed_sql::Seeded::Now { took_ms, .. } => took_ms,
        riverbed_sql::Seeded::Already => unreachable!("the record was deleted"),
    }
}

/// `flushes` flushes of `query`; returns the lateness of each, in milliseconds, sorted.
async fn lateness(pool: &sqlx::PgPool, query: &str, flushes: usize) -> Vec<f64> {
    let layout = TotalsLayout::HashPerGroup {
        prefix: format!("bench:lateness:{}:", std::process::id()),
    };
    let redis = RedisConfig::new(REDIS_URL).connect().await.expect("Redis");
    let source = Arc::new(QueryTotals::new(pool.clone(), query));
    let counter =
        WindowCounter::new("bench", Totals::new(source, redis, layout), EVERY).expect("counter");
    let mut watch = counter.watch();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(counter.run(async {
        let _ = stopped.await;
    }));
    let mut out = Vec::new();
    let started = SystemTime::now();
    while out.len() < flushes {
        watch.changed().await.expect("counter runs");
        let f = watch.borrow_and_update().expect("a flush");
        if f.boundary > started {
            out.push(f.lateness.as_secs_f64() * 1000.0);
        }
    }
    let _ = stop.send(());
    task.await.expect("counter stops");
    out.sort_by(f64::total_cmp);
    out
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn row(v: &[f64]) -> String {
    format!(
        "{:.0} | {:.0} | {:.0}",
        pct(v, 0.5),
        pct(v, 0.99),
        v.last().copied().unwrap_or(0.0)
    )
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let sizes: Vec<u64> = args
        .next()
        .unwrap_or_else(|| "1000000,10000000,30000000".into())
        .split(',')
        .map(|s| s.parse().expect("a size"))
        .collect();
    let flushes: usize = args.next().map_or(15, |a| a.parse().expect("a count"));
    let pool = riverbed_sql::postgres_pool(
        PG_URL
            .parse::<sqlx::postgres::PgConnectOptions>()
            .expect("url")
            .application_name("riverbed-bench-lateness"),
        4,
        Duration::from_secs(10),
        Duration::from_secs(600),
    )
    .await
    .expect("PostgreSQL");
    exec(&pool, &format!("DROP TABLE IF EXISTS {HISTORY}, {TOTALS}")).await;
    exec(&pool, &format!("CREATE TABLE {HISTORY} (id TEXT NOT NULL, provider TEXT NOT NULL, amount NUMERIC NOT NULL)")).await;
    let scan = format!(
        "SELECT provider, count(*) AS count, sum(amount) AS sum FROM {HISTORY} GROUP BY provider"
    );
    let kept = format!("SELECT provider, count, sum FROM {TOTALS}");
    println!(
        "| history rows | seed ms | scan p50 ms | scan p99 ms | scan max ms | totals p50 ms | totals p99 ms | totals max ms |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut rows = 0;
    for size in sizes {
        let t = std::time::Instant::now();
        grow(&pool, rows, size).await;
        rows = size;
        eprintln!(
            "{size} rows generated and vacuumed in {:.0} s",
            t.elapsed().as_secs_f64()
        );
        let seed_ms = seed(&pool).await;
        let scanned = lateness(&pool, &scan, flushes).await;
        let from_totals = lateness(&pool, &kept, flushes).await;
        println!(
            "| {size} | {seed_ms} | {} | {} |",
            row(&scanned),
            row(&from_totals)
        );
    }
    exec(&pool, &format!("DROP TABLE IF EXISTS {HISTORY}, {TOTALS}")).await;
    exec(
        &pool,
        &format!("DELETE FROM {SEEDED_TABLE} WHERE totals_table = '\"{TOTALS}\"'"),
    )
    .await;
    let mut redis = redis::Client::open(REDIS_URL)
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("Redis");
    let prefix = format!("bench:lateness:{}:", std::process::id());
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut redis)
        .await
        .expect("keys");
    keys.push(format!("riverbed:totals-keys:{prefix}"));
    let _: () = redis::cmd("DEL")
        .arg(keys)
        .query_async(&mut redis)
        .await
        .expect("del");
}
