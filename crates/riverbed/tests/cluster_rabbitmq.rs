//! `partitioned` mode on a real 3-node RabbitMQ cluster that this test starts itself (own node
//! names, ports and data directories; the shared broker on 5672 is not touched): quorum
//! partition queues replicated on every node, a backlog consumed by the real binary, and the
//! node hosting a partition's leader stopped mid-run. Nothing is lost, per-key order holds, and
//! consumption resumes on the new leader.
//!
//! It found two bugs, both fixed: the default dead-letter queue of a quorum source was a
//! classic queue on one node (with that node down the source could not declare it), and
//! cumulative acks assumed deliveries arrive in tag order, which consumers of several queues on
//! one channel do not (an early ack, then `unknown delivery tag` closing the channel).

#[path = "outages/arrivals.rs"]
mod arrivals;
#[path = "recipe_transactions/daemon.rs"]
mod daemon;

use std::time::{Duration, Instant};

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use riverbed_core::testing::{lock_service, rabbitmq_cluster, require_service};
use sqlx::PgPool;

use daemon::Daemon;

const PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
const EVENTS: u64 = 12000;
const ENTITIES: u64 = 60;
const PARTITIONS: u16 = 4;
const BASE_PORT: u16 = 56710;

async fn count(pg: &PgPool, table: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
        .fetch_one(pg)
        .await
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_of_three_nodes_loses_a_partition_leader_without_loss_or_reordering() {
    // The lock first: a test that stops PostgreSQL holds it until PostgreSQL is back.
    let _pg = lock_service("postgres", false).await;
    if !require_service("PostgreSQL", "127.0.0.1:5432") {
        return;
    }
    let Some(mut cluster) = tokio::task::spawn_blocking(|| rabbitmq_cluster(BASE_PORT, 3))
        .await
        .unwrap()
    else {
        return;
    };
    let run = format!("{}", std::process::id());
    let (queue, table) = (format!("clustered_{run}"), format!("clustered_{run}"));
    let urls: Vec<String> = cluster.urls().iter().map(|u| format!("\"{u}\"")).collect();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pipeline.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[pipeline]
key = "routing_key"
max_in_flight = 40          # a slow consumer: most of the backlog is still queued at the stop

[cluster]
mode = "partitioned"
partitions = {PARTITIONS}

[source]
kind = "amqp"
urls = [{}]
queue = "{queue}"
queue_type = "quorum"
prefetch = 20

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
"#,
            urls.join(", ")
        ),
    )
    .unwrap();
    let pg = PgPool::connect(PG_URL).await.unwrap();
    arrivals::create(&pg, &table).await;
    arrivals::declare(&config);

    // The backlog, published to node 0 with confirms: replicated to every node.
    let conn = Connection::connect(&cluster.url(0), ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for i in 0..EVENTS {
        let entity = format!("e{}", i % ENTITIES);
        let body = serde_json::json!({"id": format!("{entity}-{i}"), "entity": entity, "seq": i});
        drop(
            ch.basic_publish(
                queue.as_str().into(),
                entity.as_str().into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &serde_json::to_vec(&body).unwrap(),
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .unwrap(),
        );
    }
    assert!(
        ch.wait_for_confirms().await.unwrap().is_empty(),
        "every event routed"
    );
    let _ = conn.close(200, "published".into()).await;

    let partition = format!("{queue}.0");
    // Asked before the run: `rabbitmqctl` takes seconds, which the consumer would use up.
    let leader = cluster
        .leader_of(&partition, 0)
        .expect("partition 0 has a leader");
    let mut daemon = Daemon::spawn("riverbed", &config, "info");
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(&pg, &table).await < 200 {
        assert!(Instant::now() < deadline, "consumption did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ask = (leader + 1) % 3;
    let before_stop = count(&pg, &table).await;
    cluster.stop_node(leader);
    let stopped = Instant::now();
    // The node stops gracefully (it serves while it shuts down): what matters is that the
    // rest is consumed once it is gone.
    let at_stop = count(&pg, &table).await;
    assert!(
        at_stop < EVENTS as i64 * 9 / 10,
        "the stop came mid-run ({before_stop} committed when it began, {at_stop} of {EVENTS} when the node was gone)"
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    while count(&pg, &table).await < EVENTS as i64 {
        assert!(
            Instant::now() < deadline,
            "consumption did not resume on the new leaders"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let new_leader = cluster.leader_of(&partition, ask).expect("a new leader");
    assert_ne!(new_leader, leader);
    eprintln!(
        "node {leader} (leader of {partition}) stopped with {before_stop} of {EVENTS} committed ({at_stop} once it was gone); every event committed {} ms later, new leader node {new_leader}",
        stopped.elapsed().as_millis()
    );
    let distinct: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(DISTINCT id) FROM {table}"
    )))
    .fetch_one(&pg)
    .await
    .unwrap();
    assert_eq!(distinct, EVENTS as i64);
    arrivals::assert_entity_order(&pg, &table).await;
    daemon.terminate();
    let (status, summary) = daemon.exit(Duration::from_secs(30)).await;
    assert!(status.success(), "{summary}");
    assert_eq!(summary["dead_lettered"], 0, "{summary}");
    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP TABLE {table}")))
        .execute(&pg)
        .await;
    drop(cluster);
}
