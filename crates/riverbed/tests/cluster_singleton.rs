//! `[cluster] mode = "singleton"` through the real binary: two instances on one queue, one
//! leader (a PostgreSQL advisory lock) and one standby that consumes nothing. The leader is
//! SIGKILLed mid-run; the standby takes over, and every event is in the table exactly once, in
//! per-entity order. The takeover time is printed (BENCHMARKS.md has the measured figures).

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
const EVENTS: u64 = 3000;
const CONSUMING: &str = "Leader: consuming";

async fn count(pg: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(pg)
        .await
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn singleton_standby_takes_over_from_a_sigkilled_leader_losing_nothing() {
    if !(require_service("RabbitMQ", "127.0.0.1:5672")
        && require_service("PostgreSQL", "127.0.0.1:5432"))
    {
        return;
    }
    let _locks = (
        lock_service("rabbitmq", false).await,
        lock_service("postgres", false).await,
    );
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let run = format!("{}_{nanos}", std::process::id());
    let (queue, table) = (format!("singleton_q{run}"), format!("singleton_t{run}"));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pipeline.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[pipeline]
key = "/entity"

[cluster]
mode = "singleton"
name = "singleton-test-{run}"
postgres = {{ url = "{PG_URL}" }}

[source]
kind = "amqp"
urls = ["{AMQP_URL}"]
queue = "{queue}"
queue_type = "quorum"

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
"#
        ),
    )
    .unwrap();
    let pg = PgPool::connect(PG_URL).await.unwrap();
    arrivals::create(&pg, &table).await;
    arrivals::declare(&config);

    let mut leader = Daemon::spawn("leader", &config, "info");
    leader
        .wait_log(CONSUMING, Duration::from_secs(30), |_| true)
        .await;
    let mut standby = Daemon::spawn("standby", &config, "info");
    standby
        .wait_log(
            "Standing by: another instance holds the lease",
            Duration::from_secs(30),
            |_| true,
        )
        .await;
    let publisher = tokio::spawn({
        let queue = queue.clone();
        async move {
            Broker::connect()
                .await
                .publish_steadily(&queue, events(EVENTS, 30), 300)
                .await
        }
    });
    let rows = format!("SELECT count(*) FROM {table}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(&pg, &rows).await < EVENTS as i64 / 3 {
        assert!(Instant::now() < deadline, "the leader wrote too little");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        standby.find("Consuming", |_| true).is_none(),
        "the standby consumed nothing while the leader lived"
    );
    leader.kill();
    let killed = Instant::now();
    standby
        .wait_log(CONSUMING, Duration::from_secs(30), |_| true)
        .await;
    let takeover = killed.elapsed();
    publisher.await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(&pg, &rows).await < EVENTS as i64 {
        assert!(Instant::now() < deadline, "not every event arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let distinct = count(&pg, &format!("SELECT count(DISTINCT id) FROM {table}")).await;
    assert_eq!(
        (count(&pg, &rows).await, distinct),
        (EVENTS as i64, EVENTS as i64)
    );
    arrivals::assert_entity_order(&pg, &table).await;
    eprintln!(
        "singleton takeover after SIGKILL: {} ms (until the standby consumes)",
        takeover.as_millis()
    );
    standby.terminate();
    let (status, summary) = standby.exit(Duration::from_secs(30)).await;
    assert!(status.success(), "{summary}");
    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP TABLE {table}")))
        .execute(&pg)
        .await;
    Broker::connect()
        .await
        .delete(&[queue.clone(), format!("{queue}.dlq")])
        .await;
}
