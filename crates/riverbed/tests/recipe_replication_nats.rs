//! `recipes/replication` on NATS JetStream (`consumer-nats.toml`), end to end through the real
//! binary: a nats-server of the test's own (the recipe's subject mapping belongs to the
//! server's configuration, which the shared server's is not ours to change) maps
//! `replication.<entity>.<id>` onto 8 partitions; 3 instances share the partitions through a
//! PostgreSQL lease per partition while the events of 1,000 entities are published, and one
//! instance is SIGKILLed mid-run and started again. The replica equals the source of truth
//! and the arrival log never shows a version of an entity committed after a newer one.

#[path = "recipe_replication/arrival_log.rs"]
mod arrival_log;
#[path = "recipe_transactions/daemon.rs"]
mod daemon;
#[path = "recipe_replication/events.rs"]
mod events;
#[path = "recipe_replication/replica.rs"]
mod replica;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use riverbed_core::testing::{lock_service, nats_server, require_service};
use sqlx::PgPool;

use daemon::Daemon;
use replica::{Names, PG_URL, reorderings, replica, wait_rows};

const PORT: u16 = 14231;
const ENTITIES: u32 = 1000;
const INSTANCES: usize = 3;

fn recipe(file: &str) -> String {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../recipes/replication");
    std::fs::read_to_string(dir.join(file)).unwrap()
}

/// The recipe's NATS consumer on this run's server, stream, leases and tables.
fn consumer_file(dir: &Path, names: &Names, stream: &str) -> PathBuf {
    let mut text = recipe("consumer-nats.toml");
    for (from, to) in [
        ("nats://127.0.0.1:4222", format!("nats://127.0.0.1:{PORT}")),
        ("stream = \"REPLICATION\"", format!("stream = \"{stream}\"")),
        (
            "name = \"replication\"",
            format!("name = \"{}\"", names.queue),
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
    text.push_str(&replica::arrival_sink(&names.arrivals));
    let path = dir.join("consumer-nats.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Publishes every event to `replication.<entity>.<id>` with its message id, awaiting each
/// publish ack, at about `per_second`, once the consumers have created `stream`.
async fn publish(stream: String, events: Vec<events::Event>, per_second: u64) {
    let client = async_nats::connect(format!("nats://127.0.0.1:{PORT}"))
        .await
        .unwrap();
    let js = async_nats::jetstream::new(client);
    let deadline = Instant::now() + Duration::from_secs(30);
    while js.get_stream(&stream).await.is_err() {
        assert!(Instant::now() < deadline, "no instance created `{stream}`");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let started = Instant::now();
    for (n, (key, id, body)) in events.into_iter().enumerate() {
        let subject = format!("replication.{}", key.replace(':', "."));
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", id.as_str());
        js.publish_with_headers(subject, headers, serde_json::to_vec(&body).unwrap().into())
            .await
            .unwrap()
            .await
            .unwrap();
        let due = started + Duration::from_millis(n as u64 * 1000 / per_second);
        tokio::time::sleep_until(due.into()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_on_nats_with_three_partitioned_instances_keeps_entity_order_through_a_sigkill()
{
    if !require_service("PostgreSQL", "127.0.0.1:5432") {
        return;
    }
    let _pg = lock_service("postgres", false).await;
    let mapping = recipe("nats-server.conf");
    let Some(_server) = tokio::task::spawn_blocking(move || nats_server(PORT, &mapping))
        .await
        .unwrap()
    else {
        return;
    };
    let pg = PgPool::connect(PG_URL).await.unwrap();
    let names = Names::new("nats");
    let stream = format!("REPLICATION_{}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let config = consumer_file(dir.path(), &names, &stream);
    replica::create_arrivals(&pg, &names.arrivals).await;

    let run = async {
        let mut instances: Vec<Daemon> = (0..INSTANCES)
            .map(|_| Daemon::spawn("instance", &config, "info"))
            .collect();
        // Every partition is taken by someone before the events flow.
        for d in &instances {
            d.wait_log(
                "Partition lease acquired; consuming after the takeover delay",
                Duration::from_secs(30),
                |_| true,
            )
            .await;
        }
        let (mut events, truth) = events::events(ENTITIES);
        // Round-robin over the entities (every first version, then every second...): an
        // entity's next version is published while its previous one may still be pending at
        // an instance, which is what a takeover must not reorder.
        events.sort_by_key(|(_, _, body)| body["version"].as_i64());
        let total = events.len() as i64;
        let publisher = tokio::spawn(publish(stream.clone(), events, 5000));
        wait_rows(&pg, &names.arrivals, total / 3, Duration::from_secs(60)).await;
        let acquired =
            |d: &Daemon, what: &str| d.lines().iter().filter(|l| l.contains(what)).count();
        const ACQUIRED: &str = "Partition lease acquired";
        let held_before: usize = instances[1..].iter().map(|d| acquired(d, ACQUIRED)).sum();
        instances[0].kill();
        let killed = Instant::now();
        instances[0] = Daemon::spawn("instance (restarted)", &config, "info");
        publisher.await.unwrap();
        wait_rows(&pg, &names.arrivals, total, Duration::from_secs(120)).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        while replica(&pg, &names).await != truth {
            assert!(
                Instant::now() < deadline,
                "the replica never matched the source of truth"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let held_after: usize = instances[1..].iter().map(|d| acquired(d, ACQUIRED)).sum();
        let taken_over: usize = instances
            .iter()
            .map(|d| acquired(d, "Durable taken over"))
            .sum();
        eprintln!(
            "{total} events of {ENTITIES} entities applied; every event committed {} ms after the SIGKILL; \
             the survivors took {} partitions over, {taken_over} of them with deliveries pending",
            killed.elapsed().as_millis(),
            held_after - held_before
        );
        assert!(
            held_after > held_before,
            "the killed instance's partitions moved to the others"
        );
        for mut d in instances {
            d.terminate();
            let (status, summary) = d.exit(Duration::from_secs(30)).await;
            assert!(status.success(), "{summary}");
            assert_eq!(summary["dead_lettered"], 0, "{summary}");
        }
        reorderings(&pg, &names.arrivals).await
    };
    let late = tokio::time::timeout(Duration::from_secs(300), run)
        .await
        .expect("the run finishes");
    eprintln!("arrivals committed after a newer version of their entity: {late}");
    assert_eq!(
        late, 0,
        "no version committed after a newer one of its entity"
    );
    for t in [&names.table, &names.arrivals] {
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP TABLE {t}")))
            .execute(&pg)
            .await;
    }
}
