//! The ledger with chaos: transactions from the embedded log through a real `Pipeline` into
//! PostgreSQL (idempotent append keeping a totals table in the same transaction), history
//! that never came through the pipeline seeded into the totals at start, per-provider totals
//! read from the totals table and flushed to Redis every 2 seconds, producer duplicates,
//! PostgreSQL connections killed and Redis restarted (every key lost) mid-run.

use super::*;

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
    let amount = format!("{}.{:02}", cents / 100, cents % 100);
    let body = serde_json::json!({"id": id, "provider": provider, "amount": amount});
    Record::new(Some(provider), serde_json::to_vec(&body).unwrap())
}

async fn count(pool: &PgPool, table: &str) -> i64 {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM \"{table}\""
    )))
    .fetch_one(pool)
    .await
    .unwrap()
    .get(0)
}

async fn wait_for_rows(pool: &PgPool, table: &str, want: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while count(pool, table).await < want {
        assert!(
            tokio::time::Instant::now() < deadline,
            "rows never reached {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

type Expected = BTreeMap<String, (String, String)>;

/// Expected `(count, sum)` per provider of these transaction numbers, computed here, not in SQL.
fn expected(ids: impl Iterator<Item = u64>) -> Expected {
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

async fn redis_totals(prefix: &str) -> Expected {
    let groups = ["provider-0", "provider-1", "provider-2", "provider-3"];
    redis_sums(prefix, &groups).await.into_iter().collect()
}

async fn table_totals(pool: &PgPool, sql: String) -> Expected {
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_all(pool)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect()
}

fn sink_config(table: &str, totals: &str, app: &str) -> PostgresSinkConfig {
    toml::from_str(&format!(
        r#"
        mode = "append"
        table = "{table}"
        key = ["id"]
        create_table = true
        columns = [
          {{ name = "id", type = "text", from = "/id", required = true }},
          {{ name = "provider", type = "text", from = "/provider", required = true }},
          {{ name = "amount", type = "numeric", from = "/amount", required = true }},
        ]
        totals = {{ table = "{totals}", group = ["provider"], sum = {{ sum = "amount" }}, create_table = true }}
        [connection]
        url = "{PG_URL}"
        application_name = "{app}"
        max_connections = 4
        statement_timeout = "10s"
        "#
    ))
    .unwrap()
}

/// History (0..500) written before the sink starts: the sink seeds it into its totals.
async fn history(admin: &PgPool, table: &str) {
    exec(admin, format!(
        "CREATE TABLE \"{table}\" (id TEXT PRIMARY KEY, provider TEXT NOT NULL, amount NUMERIC NOT NULL)"
    ))
    .await;
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn totals_table_and_redis_equal_the_committed_table_through_pg_kills_and_a_redis_restart() {
    if !available() {
        return;
    }
    let _exclusive = riverbed_core::testing::lock_service("redis", true).await;
    let admin = pg("riverbed-admin").await;
    let table = unique("historical_transactions");
    let totals_table = format!("{table}_totals");
    let prefix = unique("ledger") + ":";
    let app = unique("riverbed-ledger");
    history(&admin, &table).await;
    let sink = sink_config(&table, &totals_table, &app)
        .build("ledger")
        .await
        .unwrap();
    let kept = format!(
        "SELECT provider, count::text, sum::text FROM \"{totals_table}\" ORDER BY provider"
    );
    let scanned = format!(
        "SELECT provider, count(*)::text, sum(amount)::text FROM \"{table}\" GROUP BY provider"
    );
    assert_eq!(
        table_totals(&admin, kept.clone()).await,
        expected(0..500),
        "seeded"
    );
    let query = format!("SELECT provider, count, sum FROM \"{totals_table}\"");
    let layout = TotalsLayout::HashPerGroup {
        prefix: prefix.clone(),
    };
    let counter = WindowCounter::new(
        "ledger",
        totals(&admin, &query, layout).await,
        Duration::from_secs(2),
    )
    .unwrap();
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

    // Wave 1: 500..2000, with 200 of them sent twice by the producer, and 100 of the history
    // sent again (they were seeded: they must not count twice).
    let wave = |r: std::ops::Range<u64>| r.map(record).collect::<Vec<_>>();
    for r in [500..2000, 800..1000, 400..500] {
        log.append("incoming_transactions", wave(r)).await.unwrap();
    }
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
    log.append("incoming_transactions", wave(4000..5000))
        .await
        .unwrap();
    let up = riverbed_core::testing::restart_redis_losing_data();
    log.append("incoming_transactions", wave(3500..3700))
        .await
        .unwrap();
    drop(up);
    wait_for_rows(&admin, &table, 5000).await;
    let done_at = SystemTime::now();
    let last = next_flush_after(&mut flushes, done_at).await;
    assert_eq!(last.groups, 4);
    let want = expected(0..5000);
    assert_eq!(
        table_totals(&admin, scanned).await,
        want,
        "each row exactly once"
    );
    assert_eq!(
        table_totals(&admin, kept).await,
        want,
        "totals table == GROUP BY"
    );
    assert_eq!(redis_totals(&prefix).await, want, "Redis == GROUP BY");

    stop.send(()).unwrap();
    let report = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let letters = dead_letters.letters();
    assert_eq!(report.stats.dead_lettered, 0, "{letters:?}");
    assert_eq!(stats.snapshot().acked, 1500 + 200 + 100 + 2000 + 1000 + 200);
    stop_counter.send(()).unwrap();
    counter_task.await.unwrap();
    delete_prefix(&prefix).await;
    exec(
        &admin,
        format!("DROP TABLE \"{table}\", \"{totals_table}\""),
    )
    .await;
    exec(
        &admin,
        format!("DELETE FROM {SEEDED_TABLE} WHERE totals_table = '\"{totals_table}\"'"),
    )
    .await;
}
