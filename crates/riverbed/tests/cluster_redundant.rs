//! `[cluster] mode = "redundant"` through the real binary: two instances each consume their
//! own copy of the stream (exclusive, server-named queues bound to one exchange) and claim
//! every message id in Redis before writing it. One instance is SIGKILLed mid-run: every event
//! is in the table exactly once, in per-entity order, and almost no write was attempted twice
//! (the table's `arrival` sequence, which a skipped duplicate insert also advances, shows it).

#[path = "outages/arrivals.rs"]
mod arrivals;
#[path = "outages/broker.rs"]
mod broker;
#[path = "recipe_transactions/daemon.rs"]
mod daemon;

use std::time::{Duration, Instant};

use riverbed_core::testing::{lock_service, require_service};
use sqlx::PgPool;

use broker::{AMQP_URL, Broker, events};
use daemon::Daemon;

const PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
const REDIS_URL: &str = "redis://127.0.0.1:6379";
const EVENTS: u64 = 3000;

async fn count(pg: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(pg)
        .await
        .unwrap_or(0)
}

fn config(run: &str, exchange: &str, table: &str) -> String {
    format!(
        r##"
[pipeline]
key = "/entity"

[cluster]
mode = "redundant"
name = "redundant-test-{run}"
dedup = {{ redis = {{ url = "{REDIS_URL}" }}, claim_ttl = "3s" }}

[source]
kind = "amqp"
urls = ["{AMQP_URL}"]
queue = ""
exclusive = true
dead_letter_queue = "{exchange}.dlq"
exchanges = [{{ name = "{exchange}", kind = "topic" }}]
bindings = [{{ exchange = "{exchange}", routing_key = "#" }}]

[[sinks]]
name = "events"
kind = "postgres"
mode = "append"
table = "{table}"
key = ["id"]
create_table = false
connection = {{ url = "{PG_URL}" }}
columns = [
  {{ name = "id", type = "text", from = "/id", required = true }},
  {{ name = "entity", type = "text", from = "/entity", required = true }},
  {{ name = "seq", type = "integer", from = "/seq", required = true }},
]
"##
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_redundant_instances_write_each_event_once_when_one_is_sigkilled() {
    if !(require_service("RabbitMQ", "127.0.0.1:5672")
        && require_service("PostgreSQL", "127.0.0.1:5432")
        && require_service("Redis", "127.0.0.1:6379"))
    {
        return;
    }
    let _locks = (
        lock_service("rabbitmq", false).await,
        lock_service("postgres", false).await,
        lock_service("redis", false).await,
    );
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let run = format!("{}_{nanos}", std::process::id());
    let (exchange, table) = (format!("redundant_x{run}"), format!("redundant_t{run}"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pipeline.toml");
    std::fs::write(&path, config(&run, &exchange, &table)).unwrap();
    let pg = PgPool::connect(PG_URL).await.unwrap();
    arrivals::create(&pg, &table).await;

    let mut first = Daemon::spawn("first", &path, "info");
    let mut second = Daemon::spawn("second", &path, "info");
    for d in [&first, &second] {
        d.wait_log("Consuming", Duration::from_secs(30), |_| true)
            .await;
    }
    let publisher = tokio::spawn({
        let exchange = exchange.clone();
        async move {
            let keyed = events(EVENTS, 30)
                .into_iter()
                .map(|(id, body)| (body["entity"].as_str().unwrap().to_owned(), id, body))
                .collect();
            Broker::connect()
                .await
                .publish_keyed(&exchange, keyed, 300)
                .await
        }
    });
    let rows = format!("SELECT count(*) FROM {table}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(&pg, &rows).await < EVENTS as i64 / 3 {
        assert!(Instant::now() < deadline, "too little was written");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    first.kill();
    publisher.await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(&pg, &rows).await < EVENTS as i64 {
        assert!(Instant::now() < deadline, "not every event arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    second.terminate();
    let (status, summary) = second.exit(Duration::from_secs(30)).await;
    assert!(status.success(), "{summary}");
    assert_eq!(
        summary["acked"], EVENTS,
        "the survivor settled its whole copy: {summary}"
    );
    assert_eq!(summary["dead_lettered"], 0, "{summary}");
    let distinct = count(&pg, &format!("SELECT count(DISTINCT id) FROM {table}")).await;
    assert_eq!(
        (count(&pg, &rows).await, distinct),
        (EVENTS as i64, EVENTS as i64)
    );
    arrivals::assert_entity_order(&pg, &table).await;
    // Every insert, skipped duplicates and rolled-back batches included, takes an `arrival`.
    let attempted = count(&pg, &format!("SELECT max(arrival) FROM {table}")).await;
    let twice = attempted - EVENTS as i64;
    eprintln!("redundant: {EVENTS} events, 0 lost, 0 duplicated, {twice} inserts attempted twice");
    assert!(
        twice < EVENTS as i64 / 10,
        "the claims let most events be written by one instance only: {twice} written twice"
    );
    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP TABLE {table}")))
        .execute(&pg)
        .await;
    let broker = Broker::connect().await;
    broker.delete(&[format!("{exchange}.dlq")]).await;
}
