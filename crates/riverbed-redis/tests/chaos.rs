//! The transaction-ledger scenario end to end, with chaos: transactions from the embedded log
//! through a real `Pipeline` into PostgreSQL (`historical_transactions`, idempotent append),
//! per-provider totals flushed to Redis at every full 2 seconds, PostgreSQL connections killed
//! and Redis restarted mid-run. Also: Redis down makes writes unavailable (waited out, no attempt used up), never lost.
//! These tests restart services: they hold the service lock exclusively.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use riverbed_core::testing::{Journal, MemoryDeadLetters};
use riverbed_core::{BatchOutcome, KeySpec, Message, Outcome, Pipeline, RetryPolicy, Sink};
use riverbed_embedded::{Durability, EmbeddedLog, LogSource, Record};
use riverbed_redis::{
    Amount, DedupConfig, Flush, HashIncrConfig, HashIncrSink, Totals, TotalsLayout, WindowCounter,
};
use riverbed_sql::{ColumnConfig, ColumnType, PostgresSinkConfig};
use sqlx::Row;
use support::*;

/// Transaction `i`: provider `i % 4`, amount in cents derived from `i`.
fn transaction(i: u64) -> (String, String, i64) {
    (
        format!("tx-{i}"),
        format!("provider-{}", i % 4),
        ((i * 7919) % 100_000) as i64 + 1,
    )
}

fn record(i: u64) -> Record {
    let (id, provider, cents) = transaction(i);
    let body = serde_json::json!({"id": id, "provider": provider, "amount": format!("{}.{:02}", cents / 100, cents % 100)});
    Record::new(Some(provider), serde_json::to_vec(&body).unwrap())
}

async fn count(pool: &sqlx::PgPool, table: &str) -> i64 {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM \"{table}\""
    )))
    .fetch_one(pool)
    .await
    .unwrap()
    .get(0)
}

async fn wait_for_rows(pool: &sqlx::PgPool, table: &str, want: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while count(pool, table).await < want {
        assert!(
            tokio::time::Instant::now() < deadline,
            "rows never reached {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Expected `(count, sum)` per provider of these transaction numbers, computed here, not in SQL.
fn expected(ids: impl Iterator<Item = u64>) -> BTreeMap<String, (String, String)> {
    let mut acc: BTreeMap<String, (u64, i64)> = BTreeMap::new();
    for i in ids {
        let (_, p, cents) = transaction(i);
        let e = acc.entry(p).or_default();
        e.0 += 1;
        e.1 += cents;
    }
    acc.into_iter()
        .map(|(p, (n, c))| (p, (n.to_string(), format!("{}.{:02}", c / 100, c % 100))))
        .collect()
}

async fn redis_totals(prefix: &str) -> BTreeMap<String, (String, String)> {
    let mut c = redis().await;
    let mut out = BTreeMap::new();
    for p in 0..4 {
        let h: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(format!("{prefix}provider-{p}"))
            .query_async(&mut c)
            .await
            .unwrap();
        if !h.is_empty() {
            out.insert(
                format!("provider-{p}"),
                (h["count"].clone(), h["sum"].clone()),
            );
        }
    }
    out
}

fn ledger_sink_config(table: &str, app: &str) -> PostgresSinkConfig {
    let col = |name: &str, ty, required| ColumnConfig {
        name: name.into(),
        ty,
        from: format!("/{name}"),
        required,
    };
    toml::from_str::<PostgresSinkConfig>(&format!(
        "mode = \"append\"\ntable = \"{table}\"\nkey = [\"id\"]\ncreate_table = true\n[connection]\nurl = \"{PG_URL}\"\napplication_name = \"{app}\"\nmax_connections = 4\nstatement_timeout = \"10s\""
    ))
    .map(|mut c| {
        c.columns = vec![
            col("id", ColumnType::Text, true),
            col("provider", ColumnType::Text, true),
            col("amount", ColumnType::Numeric, true),
        ];
        c
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_totals_equal_the_committed_table_through_pg_kills_and_a_redis_restart() {
    if !services_available() {
        return;
    }
    let _exclusive = redis_lock(true).await;
    let admin = pg("riverbed-admin").await;
    let table = unique("historical_transactions");
    let prefix = unique("ledger") + ":";
    let app = unique("riverbed-ledger");
    // Pre-existing rows that never pass through the queue: 0..500.
    let sink = ledger_sink_config(&table, &app)
        .build("ledger")
        .await
        .unwrap();
    let mut tx = admin.begin().await.unwrap();
    for i in 0..500 {
        let (id, p, cents) = transaction(i);
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO \"{table}\" VALUES ($1, $2, round($3::numeric / 100, 2))"
        )))
        .bind(id)
        .bind(p)
        .bind(cents)
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    let query = format!(
        "SELECT provider, count(*) AS count, sum(amount) AS sum FROM \"{table}\" GROUP BY provider"
    );
    let totals = Totals::new(
        admin.clone(),
        redis_config().connect().await.unwrap(),
        &query,
        TotalsLayout::HashPerGroup {
            prefix: prefix.clone(),
        },
    );
    let counter = WindowCounter::new("ledger", totals, Duration::from_secs(2)).unwrap();
    // Startup reconciliation, before consuming.
    assert_eq!(counter.reconcile().await.unwrap(), 4);
    assert_eq!(redis_totals(&prefix).await, expected(0..500));
    let mut flushes = counter.watch();
    let (stop_counter, counter_stopped) = tokio::sync::oneshot::channel::<()>();
    let counter_task = tokio::spawn(counter.run(async {
        let _ = counter_stopped.await;
    }));

    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(dir.path().join("log.db"), Durability::Normal)
        .await
        .unwrap();
    let source = LogSource::open(&log, "incoming_transactions", "ledger", true)
        .await
        .unwrap();
    let dead_letters = Arc::new(MemoryDeadLetters::new(Journal::default()));
    let pipeline = Pipeline::builder()
        .source(source)
        .key(KeySpec::JsonPointer("/provider".into()))
        .retry(RetryPolicy {
            max_attempts: NonZeroU32::new(50).unwrap(),
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(500),
            ..RetryPolicy::default()
        })
        .sink_with("ledger", "main", sink, None)
        .dead_letters(dead_letters.clone())
        .build()
        .unwrap();
    let stats = pipeline.stats();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(pipeline.run(async {
        let _ = stopped.await;
    }));

    // Wave 1: 500..2000, with 200 of them sent twice by the producer.
    let wave = |r: std::ops::Range<u64>| r.map(record).collect::<Vec<_>>();
    log.append("incoming_transactions", wave(500..2000))
        .await
        .unwrap();
    log.append("incoming_transactions", wave(800..1000))
        .await
        .unwrap();
    wait_for_rows(&admin, &table, 2000).await;
    // Wave 2 while PostgreSQL kills the sink's connections.
    log.append("incoming_transactions", wave(2000..4000))
        .await
        .unwrap();
    let killed: i64 = sqlx::query("SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'test' AND application_name = $1 AND pid <> pg_backend_pid()) k")
        .bind(&app).fetch_one(&admin).await.unwrap().get(0);
    assert!(killed >= 1, "the sink had connections to kill");
    wait_for_rows(&admin, &table, 4000).await;
    // Redis restarts (every key lost) while wave 3 arrives.
    let down = stop_redis();
    log.append("incoming_transactions", wave(4000..5000))
        .await
        .unwrap();
    log.append("incoming_transactions", wave(3500..3700))
        .await
        .unwrap();
    down.start();
    wait_for_rows(&admin, &table, 5000).await;
    let done_at = SystemTime::now();
    let last: Flush = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            flushes.changed().await.unwrap();
            let f = flushes.borrow_and_update().unwrap();
            assert!(f.lateness < Duration::from_secs(1), "{f:?}");
            if f.boundary > done_at {
                return f;
            }
        }
    })
    .await
    .expect("a flush after the last commit");
    assert_eq!(last.groups, 4);
    assert_eq!(redis_totals(&prefix).await, expected(0..5000));
    let in_pg: BTreeMap<String, (String, String)> = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT provider, count(*)::text, sum(amount)::text FROM \"{table}\" GROUP BY provider"
    )))
    .fetch_all(&admin)
    .await
    .unwrap()
    .into_iter()
    .map(|r| (r.get(0), (r.get(1), r.get(2))))
    .collect();
    assert_eq!(in_pg, expected(0..5000), "each transaction exactly once");

    stop.send(()).unwrap();
    let report = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        report.stats.dead_lettered,
        0,
        "{:?}",
        dead_letters.letters()
    );
    assert_eq!(stats.snapshot().acked, 4900);
    stop_counter.send(()).unwrap();
    counter_task.await.unwrap();
    delete_prefix(&prefix).await;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE \"{table}\"")))
        .execute(&admin)
        .await
        .unwrap();
}

#[tokio::test]
async fn increments_while_redis_is_down_are_unavailable_and_counted_once_after() {
    if !services_available() {
        return;
    }
    let _exclusive = redis_lock(true).await;
    let prefix = unique("down");
    let sink = HashIncrSink::from_config(
        "counters",
        &HashIncrConfig {
            redis: redis_config(),
            key: format!("{prefix}:sum"),
            field: "/provider".into(),
            amount: "/cents".into(),
            kind: Amount::Integer,
            dedup: DedupConfig {
                prefix: Some(format!("{prefix}:seen:")),
                ..DedupConfig::default()
            },
        },
    )
    .await
    .unwrap();
    let batch: Vec<Message> = (0..50)
        .map(|i| {
            let mut m = Message::from_json(serde_json::json!({"provider": "acme", "cents": i}));
            m.meta.message_id = Some(format!("m{i}"));
            m
        })
        .collect();
    assert_eq!(sink.write(&batch[..10]).await, BatchOutcome::Committed);
    let redis_down = stop_redis();
    let down = tokio::time::timeout(Duration::from_secs(20), sink.write(&batch))
        .await
        .unwrap();
    assert!(
        (0..50).all(|i| matches!(down.get(i), Outcome::Unavailable(_))),
        "{down:?}"
    );
    redis_down.start();
    // Redis came back empty (no persistence): the retry counts everything once, the 10 that
    // were counted before the restart included (their markers went with the counter).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match sink.write(&batch).await {
            BatchOutcome::Committed => break,
            other => assert!(tokio::time::Instant::now() < deadline, "{other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(sink.write(&batch).await, BatchOutcome::Committed);
    let sum: i64 = redis::cmd("HGET")
        .arg(format!("{prefix}:sum"))
        .arg("acme")
        .query_async(&mut redis().await)
        .await
        .unwrap();
    assert_eq!(sum, (0..50).sum::<i64>());
    delete_prefix(&prefix).await;
}
