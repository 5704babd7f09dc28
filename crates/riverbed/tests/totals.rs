//! Totals read from PostgreSQL and written to Redis, the two connectors joined as the daemon
//! joins them (a `QueryTotals` source handed to the Redis `Totals`): reconciliation in either
//! layout, the window counter right after each boundary, and the ledger chaos run with the
//! totals table kept by the append sink, PostgreSQL connections killed and Redis restarted
//! mid-run: the totals table, the table's `GROUP BY` and Redis agree at the end.

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

use riverbed_core::testing::{Journal, MemoryDeadLetters};
use riverbed_core::{KeySpec, Pipeline, RetryPolicy};
use riverbed_embedded::{Durability, EmbeddedLog, LogSource, Record};
use riverbed_redis::{Flush, RedisConfig, Totals, TotalsLayout, WindowCounter};
use riverbed_sql::{PostgresSinkConfig, QueryTotals, SEEDED_TABLE};
use sqlx::{PgPool, Row};

const PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
const REDIS_URL: &str = "redis://127.0.0.1:6379";

fn available() -> bool {
    riverbed_core::testing::require_service("Redis", "127.0.0.1:6379")
        && riverbed_core::testing::require_service("PostgreSQL", "127.0.0.1:5432")
}

fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}_{}_{n}", std::process::id())
}

async fn pg(app: &str) -> PgPool {
    let options: sqlx::postgres::PgConnectOptions = PG_URL.parse().unwrap();
    riverbed_sql::postgres_pool(
        options.application_name(app),
        4,
        Duration::from_secs(5),
        Duration::from_secs(30),
    )
    .await
    .unwrap()
}

async fn redis() -> redis::aio::MultiplexedConnection {
    redis::Client::open(REDIS_URL)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn delete_prefix(prefix: &str) {
    let mut c = redis().await;
    for pattern in [
        format!("{prefix}*"),
        format!("riverbed:totals-keys:{prefix}*"),
    ] {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(pattern)
            .query_async(&mut c)
            .await
            .unwrap();
        if !keys.is_empty() {
            let _: () = redis::cmd("DEL")
                .arg(keys)
                .query_async(&mut c)
                .await
                .unwrap();
        }
    }
}

async fn exec(pool: &PgPool, sql: String) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(pool)
        .await
        .unwrap();
}

/// Totals of `query` on `pool`, written to the test Redis in `layout`.
async fn totals(pool: &PgPool, query: &str, layout: TotalsLayout) -> Totals {
    Totals::new(
        Arc::new(QueryTotals::new(pool.clone(), query)),
        RedisConfig::new(REDIS_URL).connect().await.unwrap(),
        layout,
    )
}

async fn ledger_table(pool: &PgPool, table: &str, rows: u64) {
    exec(
        pool,
        format!(
            "CREATE TABLE \"{table}\" (id TEXT PRIMARY KEY, provider TEXT, amount NUMERIC NOT NULL)"
        ),
    )
    .await;
    insert_rows(pool, table, 0..rows).await;
}

async fn insert_rows(pool: &PgPool, table: &str, ids: std::ops::Range<u64>) {
    exec(
        pool,
        format!(
        "INSERT INTO \"{table}\" SELECT 'tx-' || i, 'p' || (i % 3), (i * 7 % 1000) / 100.0 + 0.01
         FROM generate_series({}, {}) i",
        ids.start,
        ids.end - 1
    ),
    )
    .await;
}

async fn pg_sums(pool: &PgPool, table: &str) -> HashMap<String, (String, String)> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT provider, count(*)::text, sum(amount)::text FROM \"{table}\" WHERE provider IS NOT NULL GROUP BY provider"
    )))
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .map(|r| (r.get(0), (r.get(1), r.get(2))))
    .collect()
}

async fn redis_sums(prefix: &str, groups: &[&str]) -> HashMap<String, (String, String)> {
    let mut c = redis().await;
    let mut out = HashMap::new();
    for p in groups {
        let h: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(format!("{prefix}{p}"))
            .query_async(&mut c)
            .await
            .unwrap();
        if !h.is_empty() {
            out.insert((*p).to_owned(), (h["count"].clone(), h["sum"].clone()));
        }
    }
    out
}

fn scan(table: &str) -> String {
    format!(
        "SELECT provider, count(*) AS count, sum(amount) AS sum FROM \"{table}\" GROUP BY provider"
    )
}

#[tokio::test]
async fn totals_reconciliation_writes_the_committed_totals_in_either_layout() {
    if !available() {
        return;
    }
    let _shared = riverbed_core::testing::lock_service("redis", false).await;
    let pool = pg("riverbed-totals-test").await;
    let table = unique("historical");
    let prefix = unique("reconciled") + ":";
    ledger_table(&pool, &table, 1000).await;
    // A row without a provider cannot be named in Redis: counted, skipped.
    exec(
        &pool,
        format!("INSERT INTO \"{table}\" VALUES ('nobody', NULL, 4)"),
    )
    .await;
    let per_group = totals(
        &pool,
        &scan(&table),
        TotalsLayout::HashPerGroup {
            prefix: prefix.clone(),
        },
    )
    .await;
    assert_eq!(per_group.fetch().await.unwrap().null_groups, 1);
    assert_eq!(riverbed_redis::reconcile(&per_group).await.unwrap(), 3);
    let groups = ["p0", "p1", "p2"];
    assert_eq!(
        redis_sums(&prefix, &groups).await,
        pg_sums(&pool, &table).await
    );
    let per_total = totals(
        &pool,
        &scan(&table),
        TotalsLayout::HashPerTotal {
            prefix: format!("{prefix}agg:"),
        },
    )
    .await;
    per_total.sync(SystemTime::now()).await.unwrap();
    let sums: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(format!("{prefix}agg:sum"))
        .query_async(&mut redis().await)
        .await
        .unwrap();
    let want: HashMap<String, String> = pg_sums(&pool, &table)
        .await
        .into_iter()
        .map(|(p, (_, s))| (p, s))
        .collect();
    assert_eq!(sums, want);
    delete_prefix(&prefix).await;
    exec(&pool, format!("DROP TABLE \"{table}\"")).await;
}

#[tokio::test]
async fn totals_of_the_window_counter_are_flushed_right_after_each_boundary() {
    if !available() {
        return;
    }
    let _shared = riverbed_core::testing::lock_service("redis", false).await;
    let pool = pg("riverbed-totals-test").await;
    let table = unique("windowed");
    let prefix = unique("window") + ":";
    ledger_table(&pool, &table, 300).await;
    let layout = TotalsLayout::HashPerGroup {
        prefix: prefix.clone(),
    };
    let t = totals(&pool, &scan(&table), layout).await;
    let counter = WindowCounter::new("test", t, Duration::from_millis(500)).unwrap();
    let mut flushed = counter.watch();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(counter.run(async {
        let _ = stopped.await;
    }));
    for wave in 1..=3u64 {
        insert_rows(&pool, &table, wave * 300..wave * 300 + 300).await;
        let committed_at = SystemTime::now();
        let flush = next_flush_after(&mut flushed, committed_at).await;
        assert!(flush.lateness < Duration::from_secs(1), "{flush:?}");
        let ms = flush
            .boundary
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap();
        assert_eq!(ms.as_millis() % 500, 0);
        assert_eq!(
            redis_sums(&prefix, &["p0", "p1", "p2"]).await,
            pg_sums(&pool, &table).await,
            "wave {wave}"
        );
    }
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    delete_prefix(&prefix).await;
    exec(&pool, format!("DROP TABLE \"{table}\"")).await;
}

/// The first flush of a boundary after `after`, within 10 s; every flush seen on the way is
/// under a second late.
async fn next_flush_after(
    flushed: &mut tokio::sync::watch::Receiver<Option<Flush>>,
    after: SystemTime,
) -> Flush {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            flushed.changed().await.unwrap();
            let f = flushed.borrow_and_update().unwrap();
            assert!(f.lateness < Duration::from_secs(1), "{f:?}");
            if f.boundary > after {
                return f;
            }
        }
    })
    .await
    .expect("a flush within 10s")
}

#[path = "totals/chaos.rs"]
mod chaos;
