//! Partitions move to an instance started later (`cargo test cluster_nats`): one instance
//! takes all four partitions of a NATS pipeline, a second one starts while events flow, and
//! the first hands two partitions back, each after draining its pipeline. Every event is
//! written exactly once, and no entity's version is committed after a newer one.

#[path = "recipe_replication/arrival_log.rs"]
mod arrival_log;
#[path = "admin/client.rs"]
mod client;

use std::path::Path;
use std::time::{Duration, Instant};

use riverbed_core::testing::{lock_service, require_service};
use serde_json::json;

use client::{Daemon, unique};

const LIMIT: Duration = Duration::from_secs(60);
const PARTITIONS: u64 = 4;
const ENTITIES: u64 = 40;
const EVENTS: u64 = 4000;

fn pipeline(
    dir: &Path,
    instance: &str,
    stream: &str,
    lease: &str,
    arrivals: &str,
) -> std::path::PathBuf {
    let cfg = dir.join(format!("{instance}.toml"));
    let out = dir.join(format!("{instance}.jsonl"));
    let text = format!(
        r#"[pipeline]
key = "/entity"
shutdown_grace = "10s"

[cluster]
mode = "partitioned"
partitions = {PARTITIONS}
name = "{lease}"
lease = "postgres"
postgres = {{ url = "postgres://postgres@127.0.0.1:5432/test" }}
check_every = "200ms"

[source]
kind = "nats"
servers = ["nats://127.0.0.1:4222"]
stream = "{stream}"
durable = "d-{{partition}}"
filter_subject = "{stream}.{{partition}}.*"
ack_wait = "5s"

[[sinks]]
name = "seen"
kind = "file"
path = "{}"
{}"#,
        out.display(),
        arrival_log::arrival_sink(arrivals)
    );
    std::fs::write(&cfg, text).unwrap();
    cfg
}

/// Events in the arrival log.
async fn arrived(pg: &sqlx::PgPool, arrivals: &str) -> u64 {
    let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {arrivals}"
    )))
    .fetch_one(pg)
    .await
    .unwrap();
    n as u64
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["event"].to_string())
        .collect()
}

fn wait_logs(daemon: &Daemon, text: &str, times: usize) {
    let deadline = Instant::now() + LIMIT;
    while daemon.logs().matches(text).count() < times {
        assert!(
            Instant::now() < deadline,
            "waited for {times} x {text:?}:\n{}",
            daemon.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_nats_partitions_move_to_an_instance_started_later() {
    if !require_service("NATS", "127.0.0.1:4222")
        || !require_service("PostgreSQL", "127.0.0.1:5432")
    {
        return;
    }
    let _nats = lock_service("nats", false).await;
    let _pg = lock_service("postgres", false).await;
    let dir = tempfile::tempdir().unwrap();
    let (stream, lease, arrivals) = (
        unique("rebal", "s"),
        unique("rebal", "l"),
        unique("rebal", "a"),
    );
    let pg = sqlx::PgPool::connect("postgres://postgres@127.0.0.1:5432/test")
        .await
        .unwrap();
    arrival_log::create_arrivals(&pg, &arrivals).await;
    let client = async_nats::connect("nats://127.0.0.1:4222").await.unwrap();
    let js = async_nats::jetstream::new(client);
    js.create_stream(async_nats::jetstream::stream::Config {
        name: stream.clone(),
        subjects: vec![format!("{stream}.*.*")],
        ..Default::default()
    })
    .await
    .unwrap();

    let first_cfg = pipeline(dir.path(), "first", &stream, &lease, &arrivals);
    let second_cfg = pipeline(dir.path(), "second", &stream, &lease, &arrivals);
    let first = Daemon::spawn(&first_cfg, &[]);
    let first = tokio::task::spawn_blocking(move || {
        wait_logs(&first, "Partition lease acquired", PARTITIONS as usize);
        first
    })
    .await
    .unwrap();

    // Events flow while the second instance starts and the partitions move.
    let publisher = {
        let (js, stream) = (js.clone(), stream.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_micros(2_000));
            for i in 0..EVENTS {
                tick.tick().await;
                let entity = i % ENTITIES;
                let body = json!({"entity": format!("e{entity}"), "id": format!("{entity}"),
                                  "version": i / ENTITIES + 1, "event": i});
                let subject = format!("{stream}.{}.e{entity}", entity % PARTITIONS);
                js.publish(subject, serde_json::to_vec(&body).unwrap().into())
                    .await
                    .unwrap()
                    .await
                    .unwrap();
            }
        })
    };
    // The second instance starts once the first has written a part of the events.
    let deadline = Instant::now() + LIMIT;
    while arrived(&pg, &arrivals).await < EVENTS / 5 {
        assert!(Instant::now() < deadline, "{}", first.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let second = Daemon::spawn(&second_cfg, &[]);
    let (first, second) = tokio::task::spawn_blocking(move || {
        wait_logs(&first, "Partition handed back: drained, lease released", 2);
        wait_logs(&second, "Partition lease acquired", 2);
        (first, second)
    })
    .await
    .unwrap();
    publisher.await.unwrap();

    let deadline = Instant::now() + LIMIT;
    loop {
        let n = arrived(&pg, &arrivals).await;
        if n == EVENTS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{n} of {EVENTS} arrived:\n{}\n{}",
            first.logs(),
            second.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        arrival_log::reorderings(&pg, &arrivals).await,
        0,
        "no version after a newer one"
    );
    let (a, b) = (
        lines(&dir.path().join("first.jsonl")),
        lines(&dir.path().join("second.jsonl")),
    );
    assert!(!b.is_empty(), "the second instance wrote events");
    assert_eq!(
        a.len() + b.len(),
        EVENTS as usize,
        "each event written once ({} + {})",
        a.len(),
        b.len()
    );
    // Each ends with its share: what it acquired less what it handed back.
    let holding = |d: &Daemon| {
        let logs = d.logs();
        logs.matches("Partition lease acquired").count()
            - logs.matches("Partition handed back").count()
    };
    assert_eq!(
        (holding(&first), holding(&second)),
        (2, 2),
        "{}\n{}",
        first.logs(),
        second.logs()
    );
    assert!(
        first.logs().matches("Partition handed back").count() >= 2,
        "{}",
        first.logs()
    );
    drop((first, second));
    let _ = js.delete_stream(&stream).await;
    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP TABLE {arrivals}")))
        .execute(&pg)
        .await;
}
