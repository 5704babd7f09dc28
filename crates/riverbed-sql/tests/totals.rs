//! A totals table kept by the append sink in the same transaction as its rows: after
//! redeliveries, producer duplicates, a crash between commit and ack, refused rows, killed
//! connections and a one-time seed from history, the totals equal `GROUP BY` over the table.

mod support;

use std::sync::Arc;
use std::time::Duration;

use riverbed_core::{BatchOutcome, Message, Outcome, Sink};
use riverbed_sql::{PostgresSinkConfig, SEEDED_TABLE};
use sqlx::PgPool;
use support::*;

/// Transaction `i`: provider `p<i % 5>`, amount in cents derived from `i`.
fn tx(i: u64) -> Message {
    let cents = (i * 7919) % 100_000 + 1;
    let mut m = Message::from_json(serde_json::json!({
        "id": format!("tx-{i}"),
        "provider": format!("p{}", i % 5),
        "amount": format!("{}.{:02}", cents / 100, cents % 100),
    }));
    m.meta.message_id = Some(format!("tx-{i}"));
    m
}

fn batch(ids: impl Iterator<Item = u64>) -> Vec<Message> {
    ids.map(tx).collect()
}

fn config(table: &str, totals: &str, app: &str, extra: &str) -> PostgresSinkConfig {
    toml::from_str(&format!(
        r#"
        mode = "append"
        table = "{table}"
        key = ["id"]
        create_table = true
        {extra}
        columns = [
          {{ name = "id", type = "text", from = "/id", required = true }},
          {{ name = "provider", type = "text", from = "/provider", required = true }},
          {{ name = "amount", type = "numeric", from = "/amount", required = true }},
        ]
        totals = {{ table = "{totals}", group = ["provider"], sum = {{ sum = "amount" }}, min = {{ smallest = "amount" }}, max = {{ largest = "amount" }}, create_table = true }}
        [connection]
        url = "{PG_URL}"
        application_name = "{app}"
        max_connections = 2
        statement_timeout = "20s"
        "#
    ))
    .unwrap()
}

/// `(provider, count, sum, min, max)` rows, as text, ordered by provider. Decimals are
/// compared without trailing zeros: `min` of 0.01 and 0.0100 may keep either.
type Rows = Vec<(String, String, String, String, String)>;

async fn rows(pool: &PgPool, sql: String) -> Rows {
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .fetch_all(pool)
        .await
        .unwrap()
}

/// The totals table, and `GROUP BY` over the sink's table.
async fn both(pool: &PgPool, table: &str, totals: &str) -> (Rows, Rows) {
    let kept = rows(pool, format!(
        "SELECT provider, count::text, trim_scale(sum)::text, trim_scale(smallest)::text, trim_scale(largest)::text FROM \"{totals}\" ORDER BY provider"
    )).await;
    let scanned = rows(pool, format!(
        "SELECT provider, count(*)::text, trim_scale(sum(amount))::text, trim_scale(min(amount))::text, trim_scale(max(amount))::text FROM \"{table}\" WHERE provider IS NOT NULL GROUP BY provider ORDER BY provider"
    )).await;
    (kept, scanned)
}

async fn assert_totals_exact(pool: &PgPool, table: &str, totals: &str, rows_expected: i64) {
    let (kept, scanned) = both(pool, table, totals).await;
    assert_eq!(kept, scanned, "totals == GROUP BY");
    let n: i64 = kept.iter().map(|r| r.1.parse::<i64>().unwrap()).sum();
    assert_eq!(n, rows_expected);
}

async fn cleanup(pool: &PgPool, table: &str, totals: &str) {
    drop_tables(pool, &[table, totals]).await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DELETE FROM {SEEDED_TABLE} WHERE totals_table = $1"
    )))
    .bind(format!("\"{totals}\""))
    .execute(pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn totals_ignore_redeliveries_and_duplicates_in_either_insert_style() {
    if !postgres_available() {
        return;
    }
    let _shared = postgres_lock(false).await;
    let admin = pool("riverbed-admin").await;
    for style in ["unnest", "values"] {
        let (table, totals) = (unique("tt_dups"), unique("tt_dups_totals"));
        let extra = format!("insert_style = \"{style}\"");
        let sink = config(&table, &totals, "riverbed-totals-test", &extra)
            .build("ledger")
            .await
            .unwrap();
        // A batch holding producer duplicates (30..40 twice), then a redelivery of 100..250.
        let mut first = batch(0..300);
        first.extend(batch(30..40));
        assert_eq!(sink.write(&first).await, BatchOutcome::Committed);
        assert_totals_exact(&admin, &table, &totals, 300).await;
        let before = both(&admin, &table, &totals).await.0;
        assert_eq!(sink.write(&batch(100..250)).await, BatchOutcome::Committed);
        assert_eq!(both(&admin, &table, &totals).await.0, before, "{style}");
        // Mixed: half redelivered, half new.
        assert_eq!(sink.write(&batch(250..400)).await, BatchOutcome::Committed);
        assert_totals_exact(&admin, &table, &totals, 400).await;
        cleanup(&admin, &table, &totals).await;
    }
}

#[tokio::test]
async fn totals_survive_a_crash_between_commit_and_ack() {
    if !postgres_available() {
        return;
    }
    let _shared = postgres_lock(false).await;
    let admin = pool("riverbed-admin").await;
    let (table, totals) = (unique("tt_crash"), unique("tt_crash_totals"));
    let cfg = config(&table, &totals, "riverbed-totals-test", "");
    let sink = cfg.build("ledger").await.unwrap();
    assert_eq!(sink.write(&batch(0..500)).await, BatchOutcome::Committed);
    // The process dies after the commit, before acknowledging: the broker redelivers all of
    // it to a new process, whose sink starts from scratch (and must not seed again).
    drop(sink);
    let restarted = cfg.build("ledger").await.unwrap();
    assert_eq!(
        restarted.write(&batch(0..500)).await,
        BatchOutcome::Committed
    );
    assert_eq!(
        restarted.write(&batch(400..600)).await,
        BatchOutcome::Committed
    );
    assert_totals_exact(&admin, &table, &totals, 600).await;
    cleanup(&admin, &table, &totals).await;
}

#[tokio::test]
async fn totals_seed_history_once_even_with_two_instances_starting_together() {
    if !postgres_available() {
        return;
    }
    let _shared = postgres_lock(false).await;
    let admin = pool("riverbed-admin").await;
    let (table, totals) = (unique("tt_seed"), unique("tt_seed_totals"));
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE \"{table}\" (id TEXT PRIMARY KEY, provider TEXT, amount NUMERIC NOT NULL);
         INSERT INTO \"{table}\" SELECT 'hist-' || g, CASE WHEN g % 100 = 0 THEN NULL ELSE 'p' || (g % 7) END,
           ((g * 31) % 10000) / 100.0 FROM generate_series(1, 20000) g;"
    )))
    .execute(&admin)
    .await
    .unwrap();
    let cfg = config(&table, &totals, "riverbed-totals-test", "");
    let (a, b) = tokio::join!(cfg.build("ledger"), cfg.build("ledger"));
    let (a, b) = (a.unwrap(), b.unwrap());
    // 200 history rows without a provider cannot be in any group.
    assert_totals_exact(&admin, &table, &totals, 19_800).await;
    let recorded: (i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT source_rows, count(*) OVER () FROM {SEEDED_TABLE} WHERE totals_table = $1"
    )))
    .bind(format!("\"{totals}\""))
    .fetch_one(&admin)
    .await
    .unwrap();
    assert_eq!(recorded, (19_800, 1), "seeded once");
    let (ba, bb) = (batch(0..300), batch(200..500));
    let (wa, wb) = tokio::join!(a.write(&ba), b.write(&bb));
    assert_eq!((wa, wb), (BatchOutcome::Committed, BatchOutcome::Committed));
    // Restarting seeds nothing again (a seed now would be exact too: the point is that the
    // table is not locked and rescanned at every start).
    drop((a, b));
    let started = cfg.build("ledger").await.unwrap();
    assert_eq!(
        started.write(&batch(450..520)).await,
        BatchOutcome::Committed
    );
    assert_totals_exact(&admin, &table, &totals, 19_800 + 520).await;
    cleanup(&admin, &table, &totals).await;
}

/// Adds a trigger to `table` sleeping 30 s in each insert statement of connections named `app`.
async fn slow_inserts(admin: &PgPool, table: &str, app: &str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE FUNCTION \"{table}_slow\"() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN IF current_setting('application_name') = '{app}' THEN PERFORM pg_sleep(30); END IF; RETURN NULL; END $$;
         CREATE TRIGGER slow AFTER INSERT ON \"{table}\" FOR EACH STATEMENT EXECUTE FUNCTION \"{table}_slow\"();"
    )))
    .execute(admin)
    .await
    .unwrap();
}

/// Waits until a connection named `app` runs a statement, then terminates every one of them.
async fn kill_when_writing(admin: &PgPool, app: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let active: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND state = 'active' AND query LIKE 'WITH ins AS%'",
        )
        .bind(app)
        .fetch_one(admin)
        .await
        .unwrap();
        if active > 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the write never ran"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
    )
    .bind(app)
    .execute(admin)
    .await
    .unwrap();
}

#[tokio::test]
async fn totals_stay_exact_through_refused_rows_and_killed_connections() {
    if !postgres_available() {
        return;
    }
    let _shared = postgres_lock(false).await;
    let admin = pool("riverbed-admin").await;
    let (table, totals) = (unique("tt_fail"), unique("tt_fail_totals"));
    let app = unique("riverbed-totals-kill");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE \"{table}\" (id TEXT PRIMARY KEY, provider TEXT NOT NULL, \
         amount NUMERIC NOT NULL CHECK (amount < 990))"
    )))
    .execute(&admin)
    .await
    .unwrap();
    let sink: Arc<dyn Sink> = config(&table, &totals, &app, "")
        .build("ledger")
        .await
        .unwrap();
    // Rows the table refuses (amount >= 990, 1 in 100) are dead-lettered alone; the rest commit once.
    let first = batch(0..400);
    let refused: Vec<bool> = first
        .iter()
        .map(|m| {
            m.json().unwrap()["amount"]
                .as_str()
                .unwrap()
                .parse::<f64>()
                .unwrap()
                >= 990.0
        })
        .collect();
    let BatchOutcome::Each(outcomes) = sink.write(&first).await else {
        panic!("some rows are refused");
    };
    for (o, r) in outcomes.iter().zip(&refused) {
        assert_eq!(matches!(o, Outcome::Permanent(_)), *r, "{o:?}");
        assert_eq!(matches!(o, Outcome::Ok), !*r, "{o:?}");
    }
    let committed = refused.iter().filter(|r| !**r).count() as i64;
    assert_totals_exact(&admin, &table, &totals, committed).await;
    // A connection lost in the middle of a write: nothing of it counts, the retry counts once.
    slow_inserts(&admin, &table, &app).await;
    let second: Vec<Message> = batch(1000..1300)
        .into_iter()
        .filter(|m| {
            m.json().unwrap()["amount"]
                .as_str()
                .unwrap()
                .parse::<f64>()
                .unwrap()
                < 990.0
        })
        .collect();
    let writing = {
        let (sink, second) = (sink.clone(), second.clone());
        tokio::spawn(async move { sink.write(&second).await })
    };
    kill_when_writing(&admin, &app).await;
    let lost = tokio::time::timeout(Duration::from_secs(30), writing)
        .await
        .unwrap()
        .unwrap();
    assert!(lost.any_unavailable(), "{lost:?}");
    assert_totals_exact(&admin, &table, &totals, committed).await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP TRIGGER slow ON \"{table}\""
    )))
    .execute(&admin)
    .await
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while sink.write(&second).await != BatchOutcome::Committed {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the retry never committed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(sink.write(&second).await, BatchOutcome::Committed);
    assert_totals_exact(&admin, &table, &totals, committed + second.len() as i64).await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP FUNCTION \"{table}_slow\"() CASCADE"
    )))
    .execute(&admin)
    .await
    .ok();
    cleanup(&admin, &table, &totals).await;
}

#[tokio::test]
async fn totals_config_refuses_what_cannot_be_kept_exactly() {
    let cfg = |extra: &str| -> PostgresSinkConfig {
        toml::from_str(&format!(
            "mode = \"upsert\"\ntable = \"t\"\nkey = [\"id\"]\nversion = \"v\"\n\
             columns = [{{ name = \"id\", type = \"text\", from = \"/id\" }}, {{ name = \"v\", type = \"integer\", from = \"/v\" }}]\n\
             totals = {{ table = \"tt\", group = [\"id\"] {extra} }}\n[connection]\nurl = \"{PG_URL}\""
        ))
        .unwrap()
    };
    let err = cfg("").totals_spec().unwrap_err().to_string();
    assert!(err.contains("only mode = \"append\" keeps totals"), "{err}");
    let err = cfg("").build("x").await.err().unwrap().to_string();
    assert!(err.contains("totals"), "{err}");
}
