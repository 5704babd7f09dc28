//! `recipes/replication` end to end through the real `riverbed` binary, with the recipe's own
//! file (names and database substituted, an arrival log added): 3 instances in `partitioned`
//! mode apply 1,000 entities' CRUD events while one of them is SIGKILLed mid-run and started
//! again. The replica equals the source of truth, and the arrival log, written in commit order
//! by the same pipeline, never shows a version of an entity after a newer one. The same events
//! through 3 plain instances show the reorderings the mode exists to prevent.

#[path = "recipe_replication/arrival_log.rs"]
mod arrival_log;
#[path = "outages/arrivals.rs"]
mod arrivals;
#[path = "outages/broker.rs"]
mod broker;
#[path = "recipe_transactions/daemon.rs"]
mod daemon;
#[path = "recipe_replication/events.rs"]
mod events;
#[path = "recipe_replication/replica.rs"]
mod replica;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use riverbed_core::testing::{lock_service, require_service};
use sqlx::PgPool;

use broker::Broker;
use daemon::Daemon;
use replica::{Names, PG_URL, reorderings, replica, wait_rows};

const ENTITIES: u32 = 1000;
const INSTANCES: usize = 3;

/// The recipe's consumer file pointed at this run's names and the test database, with an
/// append-only arrival log as a second sink; `partitioned` false drops the `[cluster]` section
/// (plain instances competing on one queue).
fn consumer_file(dir: &Path, names: &Names, partitioned: bool) -> PathBuf {
    let recipe = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../recipes/replication");
    let mut text = std::fs::read_to_string(recipe.join("consumer.toml")).unwrap();
    for (from, to) in [
        (
            "queue = \"replication\"",
            format!("queue = \"{}\"", names.queue),
        ),
        (
            "dead_letter_queue = \"replication.dlq\"",
            format!("dead_letter_queue = \"{}.dlq\"", names.queue),
        ),
        (
            "table = \"replicated_entities\"",
            format!("table = \"{}\"", names.table),
        ),
        ("5432/replica", "5432/test".to_owned()),
    ] {
        assert!(text.contains(from), "the recipe has `{from}`");
        text = text.replace(from, &to);
    }
    if !partitioned {
        let cluster = "[cluster]\nmode = \"partitioned\"\npartitions = 8";
        let start = text.find(cluster).expect("the recipe's [cluster] section");
        let end = text[start..].find("\n\n").unwrap() + start;
        text.replace_range(start..end, "");
        // Plain instances consume the queue itself; the key travels in the body.
        text = text.replace("key = \"routing_key\"", "key = \"/key\"");
    }
    text.push_str(&replica::arrival_sink(&names.arrivals));
    let path = dir.join(if partitioned {
        "partitioned.toml"
    } else {
        "plain.toml"
    });
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs `INSTANCES` consumers of one file while the events are published; with `kill`, one
/// instance is SIGKILLed when a third has arrived and started again. Returns the arrival log's
/// reorderings once the replica holds every event, after checking it against the truth.
async fn run(pg: &PgPool, names: &Names, partitioned: bool, kill: bool) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let config = consumer_file(dir.path(), names, partitioned);
    replica::create_arrivals(pg, &names.arrivals).await;
    arrivals::declare(&config);
    let mut instances: Vec<Daemon> = (0..INSTANCES)
        .map(|_| Daemon::spawn("instance", &config, "info"))
        .collect();
    for d in &instances {
        d.wait_log("Consuming", Duration::from_secs(30), |_| true)
            .await;
    }
    let (events, truth) = events::events(ENTITIES);
    let total = events.len() as i64;
    let (exchange, per_second) = if partitioned {
        (names.queue.clone(), 1500)
    } else {
        (String::new(), 1500)
    };
    let routed: Vec<_> = if partitioned {
        events
    } else {
        events
            .into_iter()
            .map(|(_, id, b)| (names.queue.clone(), id, b))
            .collect()
    };
    let publisher = tokio::spawn(async move {
        Broker::connect()
            .await
            .publish_keyed(&exchange, routed, per_second)
            .await
    });
    if kill {
        wait_rows(pg, &names.arrivals, total / 3, Duration::from_secs(60)).await;
        instances[0].kill();
        instances[0] = Daemon::spawn("instance (restarted)", &config, "info");
    }
    publisher.await.unwrap();
    wait_rows(pg, &names.arrivals, total, Duration::from_secs(90)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while replica(pg, names).await != truth {
        assert!(
            Instant::now() < deadline,
            "the replica never matched the source of truth"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let broker = Broker::connect().await;
    assert_eq!(
        broker.ready(&format!("{}.dlq", names.queue)).await,
        0,
        "nothing dead-lettered"
    );
    for mut d in instances {
        d.terminate();
        let (status, summary) = d.exit(Duration::from_secs(30)).await;
        assert!(status.success(), "{summary}");
    }
    let late = reorderings(pg, &names.arrivals).await;
    let mut queues = vec![names.queue.clone(), format!("{}.dlq", names.queue)];
    queues.extend((0..8).map(|i| format!("{}.{i}", names.queue)));
    broker.delete(&queues).await;
    for t in [&names.table, &names.arrivals] {
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP TABLE {t}")))
            .execute(pg)
            .await;
    }
    late
}

#[test]
fn the_replication_recipe_validates() {
    let file =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../recipes/replication/consumer.toml");
    arrivals::validate(&file);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_with_three_partitioned_instances_keeps_entity_order_through_a_sigkill() {
    if !(require_service("RabbitMQ", "127.0.0.1:5672")
        && require_service("PostgreSQL", "127.0.0.1:5432"))
    {
        return;
    }
    let _locks = (
        lock_service("rabbitmq", false).await,
        lock_service("postgres", false).await,
    );
    let pg = PgPool::connect(PG_URL).await.unwrap();
    let partitioned = tokio::time::timeout(
        Duration::from_secs(240),
        run(&pg, &Names::new("part"), true, true),
    )
    .await
    .expect("the partitioned run finishes");
    assert_eq!(
        partitioned, 0,
        "no version committed after a newer one of its entity"
    );
    let plain = tokio::time::timeout(
        Duration::from_secs(240),
        run(&pg, &Names::new("plain"), false, false),
    )
    .await
    .expect("the plain run finishes");
    eprintln!(
        "arrivals committed after a newer version of their entity: partitioned {partitioned}, plain {plain}"
    );
    assert!(
        plain > 0,
        "plain competing instances reorder an entity's events (why the mode exists)"
    );
}
