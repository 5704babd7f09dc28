//! A destination that goes away is not a poison message: through the real `riverbed` binary
//! with default retry settings, PostgreSQL stopped for two minutes and Redis stopped for one
//! minute mid-run (each brought back by the test) dead-letter nothing, lose nothing, write
//! nothing twice, keep per-key order, and use up no attempt.

#[path = "outages/arrivals.rs"]
mod arrivals;
#[path = "outages/broker.rs"]
mod broker;
#[path = "recipe_transactions/daemon.rs"]
mod daemon;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use riverbed_core::testing::{
    lock_service, require_service, stop_postgres, stop_redis_keeping_data,
};

use broker::{AMQP_URL, Broker, events};
use daemon::Daemon;

const PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
const REDIS_URL: &str = "redis://127.0.0.1:6379";
/// Events published, at this rate: the outage starts and ends while they flow.
const EVENTS: u64 = 6000;
const RATE: u64 = 200;
const ENTITIES: u64 = 40;

/// A name unique to this run.
fn unique(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("riverbed_outage_{what}_{}_{nanos}", std::process::id())
}

/// Polls `cond` every 100 ms until it holds; fails naming `what` after `limit`.
async fn wait_for<F: Future<Output = bool>>(
    what: &str,
    limit: Duration,
    mut cond: impl FnMut() -> F,
) {
    let deadline = Instant::now() + limit;
    while !cond().await {
        assert!(Instant::now() < deadline, "waited {limit:?} for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The pipeline file: RabbitMQ `queue` with its dead-letter queue, into `sink` (a TOML
/// `[[sinks]]` table), default retry and in-flight settings.
fn pipeline(dir: &Path, queue: &str, sink: &str) -> std::path::PathBuf {
    let text = format!(
        r#"
[pipeline]
key = "/entity"

[source]
kind = "amqp"
urls = ["{AMQP_URL}"]
queue = "{queue}"
dead_letter_queue = "{queue}.dlq"

{sink}
"#
    );
    let path = dir.join("pipeline.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// What an outage must leave behind: nothing dead-lettered, no attempt used up, the outage
/// logged with its duration, a clean stop.
async fn assert_clean_outage(mut daemon: Daemon, broker: &Broker, queue: &str, at_least: Duration) {
    let (_, recovered) = daemon
        .wait_log(
            "Sink available again; intake resumes",
            Duration::from_secs(60),
            |_| true,
        )
        .await;
    let down_ms = recovered["down_ms"].as_u64().unwrap();
    assert!(
        down_ms >= at_least.as_millis() as u64,
        "logged down for {down_ms} ms"
    );
    assert_eq!(
        broker.ready(&format!("{queue}.dlq")).await,
        0,
        "nothing dead-lettered"
    );
    daemon.terminate();
    let (status, summary) = daemon.exit(Duration::from_secs(30)).await;
    assert!(status.success(), "{summary}");
    assert_eq!(summary["dead_lettered"], 0, "{summary}");
    assert_eq!(
        summary["retried"], 0,
        "an outage uses up no attempt: {summary}"
    );
    assert!(
        summary["unavailable_waits"].as_u64().unwrap() > 0,
        "{summary}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_for_two_minutes_dead_letters_nothing_and_loses_nothing() {
    if !(require_service("RabbitMQ", "127.0.0.1:5672")
        && require_service("PostgreSQL", "127.0.0.1:5432"))
    {
        return;
    }
    let _broker_lock = lock_service("rabbitmq", false).await;
    let _pg_lock = lock_service("postgres", true).await;
    let (queue, table) = (unique("pg_q"), unique("pg"));
    let dir = tempfile::tempdir().unwrap();
    let sink = format!(
        r#"[[sinks]]
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
]"#
    );
    let config = pipeline(dir.path(), &queue, &sink);
    let pg = sqlx::PgPool::connect(PG_URL).await.unwrap();
    // `arrival` records commit order: per entity it must follow `seq`.
    arrivals::create(&pg, &table).await;
    arrivals::declare(&config);
    let broker = Broker::connect().await;
    let daemon = Daemon::spawn("riverbed", &config, "info");
    let publisher = tokio::spawn({
        let queue = queue.clone();
        async move {
            Broker::connect()
                .await
                .publish_steadily(&queue, events(EVENTS, ENTITIES), RATE)
                .await
        }
    });
    let rows = |pg: sqlx::PgPool, table: String| async move {
        sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(&pg)
            .await
            .unwrap_or(0)
    };
    wait_for("the first rows", Duration::from_secs(60), || {
        let rows = rows(pg.clone(), table.clone());
        async move { rows.await >= 500 }
    })
    .await;
    pg.close().await;
    let outage = Duration::from_secs(120);
    {
        let _back = stop_postgres();
        daemon
            .wait_log(
                "Sink unavailable; its partitions wait and intake pauses (no attempt is used up)",
                Duration::from_secs(30),
                |_| true,
            )
            .await;
        tokio::time::sleep(outage).await;
        assert!(
            broker.ready(&queue).await > 0,
            "the backlog waits in the broker, not in the daemon"
        );
    }
    let pg = sqlx::PgPool::connect(PG_URL).await.unwrap();
    publisher.await.unwrap();
    wait_for("every row", Duration::from_secs(90), || {
        let rows = rows(pg.clone(), table.clone());
        async move { rows.await == EVENTS as i64 }
    })
    .await;
    assert_clean_outage(daemon, &broker, &queue, outage).await;
    let distinct: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(DISTINCT id) FROM {table}"
    )))
    .fetch_one(&pg)
    .await
    .unwrap();
    assert_eq!(distinct, EVENTS as i64, "each event once");
    arrivals::assert_entity_order(&pg, &table).await;
    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP TABLE {table}")))
        .execute(&pg)
        .await;
    broker
        .delete(&[queue.clone(), format!("{queue}.dlq")])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_for_a_minute_dead_letters_nothing_and_counts_each_message_once() {
    if !(require_service("RabbitMQ", "127.0.0.1:5672")
        && require_service("Redis", "127.0.0.1:6379"))
    {
        return;
    }
    let _broker_lock = lock_service("rabbitmq", false).await;
    let _redis_lock = lock_service("redis", true).await;
    let (queue, hash) = (unique("redis_q"), unique("redis"));
    let dir = tempfile::tempdir().unwrap();
    let sink = format!(
        r#"[[sinks]]
name = "counters"
kind = "redis_hash_incr"
redis = {{ url = "{REDIS_URL}" }}
key = "{hash}"
field = "/entity"
amount = "/amount""#
    );
    let config = pipeline(dir.path(), &queue, &sink);
    arrivals::declare(&config);
    let broker = Broker::connect().await;
    let daemon = Daemon::spawn("riverbed", &config, "info");
    let published = events(EVENTS / 2, ENTITIES);
    let mut expected = BTreeMap::<String, i64>::new();
    for (_, body) in &published {
        *expected
            .entry(body["entity"].as_str().unwrap().to_owned())
            .or_default() += body["amount"].as_i64().unwrap();
    }
    let publisher = tokio::spawn({
        let queue = queue.clone();
        async move {
            Broker::connect()
                .await
                .publish_steadily(&queue, published, RATE)
                .await
        }
    });
    let redis = redis::Client::open(REDIS_URL).unwrap();
    let totals = |redis: redis::Client, hash: String| async move {
        let Ok(mut c) = redis.get_multiplexed_async_connection().await else {
            return BTreeMap::new();
        };
        redis::cmd("HGETALL")
            .arg(&hash)
            .query_async::<BTreeMap<String, i64>>(&mut c)
            .await
            .unwrap_or_default()
    };
    wait_for("the first counts", Duration::from_secs(60), || async {
        totals(redis.clone(), hash.clone())
            .await
            .values()
            .sum::<i64>()
            > 500
    })
    .await;
    let outage = Duration::from_secs(60);
    {
        let _back = stop_redis_keeping_data();
        daemon
            .wait_log(
                "Sink unavailable; its partitions wait and intake pauses (no attempt is used up)",
                Duration::from_secs(30),
                |_| true,
            )
            .await;
        tokio::time::sleep(outage).await;
    }
    publisher.await.unwrap();
    wait_for("every count", Duration::from_secs(90), || {
        let totals = totals(redis.clone(), hash.clone());
        let expected = &expected;
        async move { totals.await == *expected }
    })
    .await;
    assert_clean_outage(daemon, &broker, &queue, outage).await;
    if let Ok(mut c) = redis.get_multiplexed_async_connection().await {
        let _: redis::RedisResult<()> = redis::cmd("DEL").arg(&hash).query_async(&mut c).await;
    }
    broker
        .delete(&[queue.clone(), format!("{queue}.dlq")])
        .await;
}
