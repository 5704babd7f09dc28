//! `recipes/transactions` end to end through the real `riverbed` binary, with the recipe's own
//! files (only names, the database and the window length substituted): startup reconciliation
//! before consuming, a few thousand transactions published by the recipe's publisher while the
//! sink's PostgreSQL connections are killed and Redis restarts, poison transactions and one
//! that keeps failing transiently dead-lettered with their reasons, every transaction exactly
//! once, Redis totals equal to the table's, and a clean stop on SIGTERM.

#[path = "recipe_transactions/daemon.rs"]
mod daemon;
#[path = "recipe_transactions/monitor.rs"]
mod monitor;
#[path = "recipe_transactions/recipe.rs"]
mod recipe;
#[path = "recipe_transactions/services.rs"]
mod services;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lapin::types::AMQPValue;
use serde_json::json;
use sqlx::{PgPool, Row};

use daemon::Daemon;
use monitor::Monitor;
use recipe::{Names, Totals, add, cents};
use services::{Broker, Cleanup, wait_for};

/// Transactions the recipe's publisher sends, at this rate per second (chaos strikes while
/// they flow).
const PUBLISHED: u64 = 3000;
const RATE: u64 = 1000;
/// The window, instead of the recipe's minute.
const EVERY: &str = "2s";
/// Info, plus every window flush with its boundary and lateness.
const LOGS: &str = "info,riverbed_redis::window=debug";
const MINUTE: Duration = Duration::from_secs(60);

#[test]
fn the_recipe_files_validate() {
    for file in ["pipeline.toml", "publisher.toml"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_riverbed"))
            .arg("validate")
            .arg(recipe::dir().join(file))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && stdout.contains(": ok"), "{file}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_recipe_runs_end_to_end_through_the_daemon() {
    if !services::available() {
        return;
    }
    let _locks = services::lock_services().await;
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(150), scenario())
        .await
        .expect("the scenario finishes in time");
    eprintln!("the ledger scenario took {:?}", started.elapsed());
}

async fn scenario() {
    let cleanup = Cleanup {
        names: Names::new(),
    };
    let names = &cleanup.names;
    let pg = services::pg().await;
    let seed = prepare_table(&pg, names).await;
    let broker = Broker::connect().await;
    broker.declare_like_the_recipe(&names.queue).await;
    let dir = tempfile::tempdir().unwrap();
    let (mut publisher, pipeline) = start(dir.path(), &broker, names, &seed).await;

    let _redis_back = chaos(&pg, names).await;
    let (status, summary) = publisher.exit(MINUTE).await;
    assert!(status.success(), "publisher: {status}");
    assert_eq!(summary["acked"], PUBLISHED, "every transaction confirmed");
    assert_eq!(summary["dead_lettered"], 0, "none unroutable");

    let mut expected = seed;
    let mut ids = BTreeSet::new();
    for (id, provider, c) in recipe::published(PUBLISHED) {
        add(&mut expected, &provider, c);
        ids.insert(id);
    }
    poison_among_good_ones(&broker, &pg, names, &mut expected, &mut ids).await;
    transient_until_exhausted(&broker, &pg, names).await;
    dead_letters_carry_their_reasons(&broker, names).await;
    each_transaction_exactly_once(&pg, names, &ids).await;
    totals_equal_the_table(&pg, &pipeline, names, &expected).await;
    stops_on_sigterm(pipeline, &publisher).await;
}

/// Starts the recipe's publisher, then, with transactions waiting in the queue, the pipeline;
/// checks that its startup reconciliation came first.
async fn start(dir: &Path, broker: &Broker, names: &Names, seed: &Totals) -> (Daemon, Daemon) {
    let pipeline_toml = dir.join("pipeline.toml");
    std::fs::write(&pipeline_toml, recipe::pipeline(names, EVERY)).unwrap();
    let publisher_toml = dir.join("publisher.toml");
    std::fs::write(&publisher_toml, recipe::publisher(names, PUBLISHED, RATE)).unwrap();
    let publisher = Daemon::spawn("publisher", &publisher_toml, "info");
    wait_for("transactions waiting in the queue", MINUTE, || async {
        broker.ready(&names.queue).await >= 200
    })
    .await;
    let monitor = Monitor::start().await;
    let pipeline = Daemon::spawn("pipeline", &pipeline_toml, LOGS);
    startup_reconciliation(monitor, &pipeline, names, seed).await;
    (publisher, pipeline)
}

/// SIGTERM: the pipeline drains and exits 0 within its grace period; no log of either daemon
/// shows the broker's password.
async fn stops_on_sigterm(mut pipeline: Daemon, publisher: &Daemon) {
    let grace = shutdown_grace();
    pipeline.terminate();
    let asked = Instant::now();
    let (status, summary) = pipeline.exit(grace + Duration::from_secs(5)).await;
    assert!(status.success(), "pipeline: {status}");
    assert!(asked.elapsed() < grace, "stopped within the grace period");
    assert_eq!(summary["drained"], true);
    assert_eq!(summary["dead_lettered"], 3, "{summary}");
    // Only tx-stuck (its 40001 belongs to it) went through the broker's retry queues, four
    // times; the writes whose connections were killed waited for PostgreSQL in the partition
    // instead, using up no attempt.
    assert_eq!(summary["broker_retried"], 4, "{summary}");
    eprintln!("pipeline summary: {summary}");
    for d in [publisher, &pipeline] {
        assert!(
            !d.lines().iter().any(|l| l.contains("guest:guest@")),
            "a log line shows the broker password"
        );
    }
}

/// Creates the table from `schema.sql`, fills it from `seed.sql`, and adds a trigger that
/// fails `tx-stuck` with SQLSTATE 40001 (counting its attempts in a sequence, which no
/// rollback undoes). Returns the seed's totals.
async fn prepare_table(pg: &PgPool, names: &Names) -> Totals {
    let t = &names.table;
    let trigger = format!(
        "CREATE SEQUENCE {t}_stuck_attempts;
         CREATE FUNCTION {t}_stuck() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF NEW.id = 'tx-stuck' THEN
             PERFORM nextval('{t}_stuck_attempts');
             RAISE EXCEPTION 'could not serialize access to %', NEW.id
               USING ERRCODE = 'serialization_failure';
           END IF;
           RETURN NEW;
         END $$;
         CREATE TRIGGER {t}_stuck BEFORE INSERT ON {t} FOR EACH ROW EXECUTE FUNCTION {t}_stuck();"
    );
    for sql in [
        recipe::sql("schema.sql", names),
        recipe::sql("seed.sql", names),
        trigger,
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(pg)
            .await
            .unwrap();
    }
    let seed = recipe::seed_totals();
    assert_eq!(
        sql_totals(pg, names).await,
        seed,
        "seed.sql as the test reads it"
    );
    seed
}

/// The reconciliation is the first write of totals, and it holds exactly the seeded rows
/// although transactions were already waiting: nothing was consumed before it.
async fn startup_reconciliation(monitor: Monitor, pipeline: &Daemon, names: &Names, seed: &Totals) {
    let (reconciled, as_of) = monitor.first_write(names, MINUTE).await;
    assert_eq!(&reconciled, seed, "the first totals are the seeded rows");
    assert!(
        as_of <= now_ms(),
        "the reconciliation is for the moment it ran"
    );
    let (reconciled_at, _) = pipeline
        .wait_log("Startup reconciliation written", MINUTE, |_| true)
        .await;
    let (consuming_at, _) = pipeline.wait_log("Consuming", MINUTE, |_| true).await;
    assert!(reconciled_at < consuming_at, "reconciled before consuming");
}

/// Kills the sink's PostgreSQL connections in the middle of a write, then restarts Redis,
/// while transactions flow.
async fn chaos(pg: &PgPool, names: &Names) -> riverbed_core::testing::ComesBack {
    wait_for("a third of the transactions", MINUTE, || async {
        committed(pg, names).await >= PUBLISHED as i64 / 3
    })
    .await;
    // A lock that blocks inserts holds the sink's next write open, so the kill surely lands
    // inside a transaction: its batch fails and goes through the broker's retry queues.
    let mut blocker = pg.begin().await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "LOCK TABLE {} IN SHARE MODE",
        names.table
    )))
    .execute(&mut *blocker)
    .await
    .unwrap();
    wait_for("a sink write waiting for the lock", MINUTE, || async {
        sink_backends(pg, names, "wait_event_type = 'Lock'").await >= 1
    })
    .await;
    // In the select list, the call only runs for the rows the WHERE clause kept (in a WHERE
    // clause the planner may call it before testing the application name).
    let killed = sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
    )
    .bind(&names.sink_app)
    .fetch_all(pg)
    .await
    .unwrap()
    .iter()
    .filter(|r| r.get::<bool, _>(0))
    .count();
    assert!(killed >= 1, "the sink had connections to kill");
    blocker.rollback().await.unwrap();
    wait_for("two thirds of the transactions", MINUTE, || async {
        committed(pg, names).await >= 2 * PUBLISHED as i64 / 3
    })
    .await;
    tokio::task::spawn_blocking(services::restart_redis)
        .await
        .unwrap()
}

/// The sink's connections that satisfy `condition` (SQL on `pg_stat_activity`).
async fn sink_backends(pg: &PgPool, names: &Names, condition: &str) -> i64 {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND {condition}"
    )))
    .bind(&names.sink_app)
    .fetch_one(pg)
    .await
    .unwrap()
    .get(0)
}

/// Two poison transactions among three good ones: a non-numeric amount, and a third decimal the
/// table's check refuses. The good ones are written, the poison dead-lettered.
async fn poison_among_good_ones(
    broker: &Broker,
    pg: &PgPool,
    names: &Names,
    expected: &mut Totals,
    ids: &mut BTreeSet<String>,
) {
    let q = &names.queue;
    let late = |i: usize| {
        let amount = [12.0, 12.01, 12.02][i];
        json!({"id": format!("tx-late-{i}"), "provider": format!("provider-{i}"),
               "amount": amount, "currency": "EUR"})
    };
    broker.publish(q, "tx-late-0", late(0)).await;
    let words = json!({"id": "tx-poison-words", "provider": "provider-1", "amount": "twelve"});
    broker.publish(q, "tx-poison-words", words).await;
    broker.publish(q, "tx-late-1", late(1)).await;
    let mills = json!({"id": "tx-poison-mills", "provider": "provider-2", "amount": 12.345});
    broker.publish(q, "tx-poison-mills", mills).await;
    broker.publish(q, "tx-late-2", late(2)).await;
    for i in 0..3 {
        add(expected, &format!("provider-{i}"), 1200 + i as i64);
        ids.insert(format!("tx-late-{i}"));
    }
    let all = ids.len() as i64;
    wait_for("every good transaction committed", MINUTE, || async {
        committed(pg, names).await == all
    })
    .await;
    wait_for("two dead letters", MINUTE, || async {
        broker.ready(&names.dlq()).await == 2
    })
    .await;
}

/// `tx-stuck`, published alone after the others, fails with 40001 on every attempt: after
/// exactly five (as the trigger counted them) it is dead-lettered.
async fn transient_until_exhausted(broker: &Broker, pg: &PgPool, names: &Names) {
    let stuck = json!({"id": "tx-stuck", "provider": "provider-3", "amount": 99.99});
    broker.publish(&names.queue, "tx-stuck", stuck).await;
    wait_for("tx-stuck dead-lettered", MINUTE, || async {
        broker.ready(&names.dlq()).await == 3
    })
    .await;
    let attempts: i64 = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT last_value FROM {}_stuck_attempts",
        names.table
    )))
    .fetch_one(pg)
    .await
    .unwrap()
    .get(0);
    assert_eq!(attempts, 5, "attempts that reached the table");
}

async fn dead_letters_carry_their_reasons(broker: &Broker, names: &Names) {
    let mut letters = BTreeMap::new();
    for d in broker.take_all(&names.dlq()).await {
        let id = d.properties.message_id().as_ref().unwrap().to_string();
        let headers = d.properties.headers().clone().unwrap_or_default();
        let text = |k: &str| match headers.inner().get(k) {
            Some(AMQPValue::LongString(s)) => s.to_string(),
            other => panic!("{id}: header {k}: {other:?}"),
        };
        let int = |k: &str| match headers.inner().get(k) {
            Some(AMQPValue::LongLongInt(i)) => *i,
            other => panic!("{id}: header {k}: {other:?}"),
        };
        let reason = (text("x-riverbed-reason"), text("x-riverbed-error"));
        assert_eq!(text("x-riverbed-original-subject"), names.queue, "{id}");
        letters.insert(id.clone(), (reason, int("x-riverbed-attempts")));
        if id == "tx-stuck" {
            assert_eq!(int("x-riverbed-attempt"), 5, "the broker attempt header");
        }
        let body: serde_json::Value = serde_json::from_slice(&d.data).unwrap();
        assert_eq!(body["id"], id.as_str(), "the original payload");
    }
    let ids: Vec<&String> = letters.keys().collect();
    assert_eq!(ids, ["tx-poison-mills", "tx-poison-words", "tx-stuck"]);
    let ((reason, error), attempts) = &letters["tx-poison-words"];
    assert_eq!(
        (reason.as_str(), *attempts),
        ("invalid_field", 1),
        "{error}"
    );
    assert!(error.contains("amount"), "{error}");
    let ((reason, error), attempts) = &letters["tx-poison-mills"];
    assert_eq!((reason.as_str(), *attempts), ("rejected", 1), "{error}");
    assert!(error.contains("amount_in_cents"), "{error}");
    let ((reason, error), attempts) = &letters["tx-stuck"];
    assert_eq!(
        (reason.as_str(), *attempts),
        ("retries_exhausted", 5),
        "{error}"
    );
    assert!(error.contains("40001"), "{error}");
}

async fn each_transaction_exactly_once(pg: &PgPool, names: &Names, ids: &BTreeSet<String>) {
    let rows: Vec<String> = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT id FROM {} WHERE id NOT LIKE 'hist-%' ORDER BY id",
        names.table
    )))
    .fetch_all(pg)
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect();
    assert_eq!(rows.len(), ids.len(), "as many rows as transactions");
    assert!(
        rows.iter().eq(ids.iter()),
        "the rows are the published transactions, poison and stuck ones aside"
    );
}

/// Waits for a flush whose boundary comes after the last commit, seen by this test less than a
/// second after its boundary and logged by the daemon with its lateness; its totals equal the
/// table's `GROUP BY` and the totals computed here.
async fn totals_equal_the_table(pg: &PgPool, pipeline: &Daemon, names: &Names, expected: &Totals) {
    let last_commit = now_ms();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut c = services::redis().await;
    let (boundary, seen_at) = loop {
        if let Some(b) = services::as_of(&mut c, names).await
            && b > last_commit
        {
            break (b, now_ms());
        }
        assert!(Instant::now() < deadline, "no flush after the last commit");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let seen_after = seen_at.saturating_sub(boundary);
    assert!(
        seen_after < 1000,
        "written {seen_after} ms after its boundary"
    );
    let (_, flushed) = pipeline
        .wait_log("Window flushed", Duration::from_secs(5), |f| {
            f["boundary_ms"] == boundary
        })
        .await;
    let lateness = flushed["lateness_ms"].as_u64().unwrap();
    assert!(lateness < 1000, "the daemon measured {lateness} ms");
    let (totals, _) = services::redis_totals(names).await;
    assert_eq!(&totals, expected, "Redis totals");
    assert_eq!(&sql_totals(pg, names).await, expected, "table totals");
    assert_eq!(&kept_totals(pg, names).await, expected, "the totals table");
}

/// `SELECT provider, count(*), sum(amount) ... GROUP BY provider`.
async fn sql_totals(pg: &PgPool, names: &Names) -> Totals {
    totals_of(
        pg,
        format!(
            "SELECT provider, count(*), sum(amount)::text FROM {} GROUP BY provider",
            names.table
        ),
    )
    .await
}

/// The totals table the sink keeps (`<table>_totals`).
async fn kept_totals(pg: &PgPool, names: &Names) -> Totals {
    totals_of(
        pg,
        format!(
            "SELECT provider, count, sum::text FROM {}_totals",
            names.table
        ),
    )
    .await
}

async fn totals_of(pg: &PgPool, sql: String) -> Totals {
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_all(pg)
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let sum: String = r.get(2);
            (r.get(0), (r.get::<i64, _>(1) as u64, cents(&sum)))
        })
        .collect()
}

/// Rows that came through the queue.
async fn committed(pg: &PgPool, names: &Names) -> i64 {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {} WHERE id NOT LIKE 'hist-%'",
        names.table
    )))
    .fetch_one(pg)
    .await
    .unwrap()
    .get(0)
}

/// The recipe's `pipeline.shutdown_grace` (whole seconds).
fn shutdown_grace() -> Duration {
    let recipe: toml::Table = recipe::read("pipeline.toml").parse().unwrap();
    let grace = recipe["pipeline"]["shutdown_grace"].as_str().unwrap();
    let secs = grace.strip_suffix('s').and_then(|s| s.parse().ok());
    Duration::from_secs(secs.unwrap_or_else(|| panic!("shutdown_grace {grace}: whole seconds")))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}
