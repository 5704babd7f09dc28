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
async fn cluster_singleton_standby_takes_over_from_a_sigkilled_leader_losing_nothing() {
    if !(require_service("RabbitMQ", "127.0.0.1:5672")
        && require_service("PostgreSQL", "127.0.0.1:5432"))
    {
        return;
    }
    let _locks = (
        lock_service("rabbitmq", false).await,
        lock_service("postgres", false).await,
    );
    takeover("postgres", &format!("postgres = {{ url = \"{PG_URL}\" }}")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_singleton_with_a_redis_lease_takes_over_with_a_higher_fencing_token() {
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
    takeover(
        "redis",
        "lease = \"redis\"\nredis = { url = \"redis://127.0.0.1:6379\" }",
    )
    .await;
}

/// Leader, standby, SIGKILL of the leader, takeover; `lease` is the lease's TOML lines.
async fn takeover(kind: &str, lease: &str) {
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
{lease}

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
  {{ name = "fence", type = "integer", from = "$header.riverbed-fencing-token" }},
]
"#
        ),
    )
    .unwrap();
    let pg = PgPool::connect(PG_URL).await.unwrap();
    arrivals::create(&pg, &table).await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "ALTER TABLE {table} ADD COLUMN fence bigint"
    )))
    .execute(&pg)
    .await
    .unwrap();
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
        "singleton ({kind} lease) takeover after SIGKILL: {} ms (until the standby consumes)",
        takeover.as_millis()
    );
    // A Redis lease's fencing token rises with each leader, and every row carries its writer's.
    let fences: Vec<Option<i64>> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT DISTINCT fence FROM {table} ORDER BY 1"
    )))
    .fetch_all(&pg)
    .await
    .unwrap();
    if kind == "redis" {
        assert!(
            fences.len() == 2 && fences[0] < fences[1] && fences[0].is_some(),
            "two leaders, two rising tokens: {fences:?}"
        );
        let late = count(
            &pg,
            &format!(
                "SELECT count(*) FROM {table} WHERE fence = {} AND arrival > \
                 (SELECT min(arrival) FROM {table} WHERE fence = {})",
                fences[0].unwrap(),
                fences[1].unwrap()
            ),
        )
        .await;
        assert_eq!(
            late, 0,
            "no write of the old leader after the new one's first"
        );
    } else {
        assert_eq!(fences, vec![None], "an advisory lock has no fencing token");
    }
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
