//! Hot reconfiguration through the real binary (`cargo test reconfig`): while messages flow
//! from RabbitMQ, changes arrive through `PUT /api/config`, SIGHUP and the control queue. A
//! change that does not validate, touches `[admin]`, or cannot connect is refused with its
//! answer and the running pipeline goes on; an accepted one drains the running pipeline and
//! starts the new one. Every message is written exactly once (the sink is a JSON-lines file:
//! a message processed twice would be there twice) and each key's messages in order.

#[path = "outages/arrivals.rs"]
mod arrivals;
#[path = "outages/broker.rs"]
mod broker;
#[path = "admin/client.rs"]
mod client;
#[path = "reconfig/control.rs"]
mod control;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use lapin::{Connection, ConnectionProperties};
use riverbed_core::testing::require_service;
use serde_json::{Value, json};

use broker::{AMQP_URL, Broker, events};
use client::{Daemon, free_port, get, put, wait_for};
use control::Asker;

const LIMIT: Duration = Duration::from_secs(60);

fn unique(what: &str) -> String {
    client::unique("reconfig", what)
}

/// The pipeline file: `queue` into the JSON-lines file `out`, 2 partitions, batches of 10
/// (written at the latest 100 ms after their first message, so that at the rates here they
/// would grow past 10 without the limit).
fn pipeline(queue: &str, out: &Path, port: u16, control: Option<&str>) -> String {
    let control = control.map_or(String::new(), |q| {
        format!("\n[control]\nurls = [\"{AMQP_URL}\"]\nqueue = \"{q}\"\n")
    });
    format!(
        r#"# Reconfigured while it runs.
[pipeline]
partitions = 2            # two batchers
key = "/entity"
shutdown_grace = "10s"

[source]
kind = "amqp"
urls = ["{AMQP_URL}"]
queue = "{queue}"
prefetch = 200

[[sinks]]
name = "out"
kind = "file"
path = "{}"
batch = {{ max_size = 10, max_wait = "100ms" }}

[admin]
listen = "127.0.0.1:{port}"
{control}"#,
        out.display()
    )
}

/// The lines of the sink's file: each message's id and its entity's sequence number.
fn written(out: &Path) -> Vec<(String, String, u64)> {
    let text = std::fs::read_to_string(out).unwrap_or_default();
    text.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            (
                v["id"].as_str().unwrap().to_owned(),
                v["entity"].as_str().unwrap().to_owned(),
                v["seq"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Waits until the file holds `n` lines; panics after `LIMIT`.
fn wait_written(out: &Path, n: usize, daemon: &Daemon) {
    let deadline = Instant::now() + LIMIT;
    while written(out).len() < n {
        assert!(
            Instant::now() < deadline,
            "{} of {n} written; logs:\n{}",
            written(out).len(),
            daemon.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every event once, and each entity's events in the order published.
fn assert_exact(out: &Path, expected: usize) {
    let lines = written(out);
    let mut seen = HashMap::new();
    for (id, _, _) in &lines {
        *seen.entry(id.clone()).or_insert(0) += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "written more than once: {twice:?}");
    assert_eq!(seen.len(), expected, "every event written");
    let mut last: HashMap<&str, u64> = HashMap::new();
    for (_, entity, seq) in &lines {
        if let Some(prev) = last.insert(entity, *seq) {
            assert!(prev < *seq, "{entity}: {seq} written after {prev}");
        }
    }
}

fn sample(metrics: &str, prefix: &str) -> f64 {
    client::sample(metrics, prefix).unwrap_or(0.0)
}

fn put_json(port: u16, body: Value) -> client::Answer {
    put(
        port,
        "/api/config",
        None,
        "application/json",
        &body.to_string(),
        LIMIT,
    )
    .expect("the admin server answers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconfig_through_the_api_and_sighup_loses_and_repeats_nothing() {
    if !require_service("RabbitMQ", "127.0.0.1:5672") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (queue, out, port) = (unique("api"), dir.path().join("out.jsonl"), free_port());
    let broker = Broker::connect().await;
    broker.delete(std::slice::from_ref(&queue)).await;
    let cfg = dir.path().join("pipeline.toml");
    std::fs::write(&cfg, pipeline(&queue, &out, port, None)).unwrap();
    arrivals::declare(&cfg);
    let daemon = Daemon::spawn(&cfg, &[]);
    wait_for(port, "/api/status", None, LIMIT, |a| {
        a.json()["state"] == "running"
    });
    let all = events(6000, 50);
    let (first, rest) = all.split_at(2000);
    broker.publish_steadily(&queue, first.to_vec(), 2000).await;

    // While the first part flows: refusals leave the running pipeline alone.
    let invalid = put_json(port, json!({"pipeline.partitions": 0}));
    assert_eq!(invalid.status, 422, "{}", invalid.body);
    assert!(invalid.body.contains("partitions"), "{}", invalid.body);
    let fixed = put_json(port, json!({"admin.listen": "127.0.0.1:1"}));
    assert_eq!(fixed.status, 409, "{}", fixed.body);
    let unknown = put_json(port, json!({"sinks.nope.batch.max_size": 5}));
    assert_eq!(unknown.status, 422, "{}", unknown.body);
    let secret_dlq = json!({"dead_letter": {"kind": "amqp",
        "urls": ["amqp://guest:hunter2@127.0.0.1:1/%2f"], "queue": "x", "connect_timeout": "1s"}});
    let unreachable = put_json(port, secret_dlq);
    assert_eq!(unreachable.status, 503, "{}", unreachable.body);
    assert!(
        !unreachable.body.contains("hunter2"),
        "{}",
        unreachable.body
    );
    let status = get(port, "/api/status", None).unwrap().json();
    assert_eq!(status["generation"], 1, "{status}");

    // Accepted mid-stream: batches of 100 over 4 partitions.
    let publisher = {
        let (queue, rest) = (queue.clone(), rest.to_vec());
        tokio::spawn(async move {
            let broker = Broker::connect().await;
            broker.publish_steadily(&queue, rest, 4000).await;
        })
    };
    let before = get(port, "/metrics", None).unwrap().body;
    let small = r#"riverbed_sink_batch_size_bucket{sink="out",le="10"}"#;
    assert_eq!(
        sample(&before, small),
        sample(&before, r#"riverbed_sink_batch_size_count{sink="out"}"#),
        "batches of at most 10 before the change"
    );
    let applied = put_json(
        port,
        json!({"pipeline": {"partitions": 4}, "sinks.out.batch.max_size": 100}),
    );
    assert_eq!(applied.status, 200, "{}", applied.body);
    let a = applied.json();
    assert_eq!(
        (a["generation"].as_u64(), a["drained"].as_bool()),
        (Some(2), Some(true)),
        "{a}"
    );
    assert!(a["swap_ms"].as_u64().is_some(), "{a}");
    println!("swapped while events flowed: {} ms", a["swap_ms"]);
    let status = get(port, "/api/status", None).unwrap().json();
    assert_eq!(
        (status["generation"].as_u64(), status["partitions"].as_u64()),
        (Some(2), Some(4))
    );
    let config = get(port, "/api/config", None).unwrap().body;
    assert!(config.contains("100"), "the new config is shown: {config}");

    // SIGHUP with the file changed on disk: back to 3 partitions.
    let reread = pipeline(&queue, &out, port, None)
        .replace("partitions = 2", "partitions = 3")
        .replace("max_size = 10,", "max_size = 100,");
    std::fs::write(&cfg, reread).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.pid() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    wait_for(port, "/api/status", None, LIMIT, |a| {
        a.json()["generation"] == 3
    });
    publisher.await.unwrap();
    wait_written(&out, all.len(), &daemon);
    assert_exact(&out, all.len());
    let after = get(port, "/metrics", None).unwrap().body;
    assert!(after.contains(small), "{after}");
    assert!(
        sample(&after, r#"riverbed_sink_batch_size_count{sink="out"}"#) > sample(&after, small),
        "batches over 10 after the change"
    );
    let logs = daemon.logs();
    assert!(logs.contains("Configuration refused"), "{logs}");
    assert!(!logs.contains("hunter2"), "no password in the logs");
    assert_eq!(broker.ready(&queue).await, 0);
    broker.delete(&[queue]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconfig_from_the_control_queue_is_answered_on_reply_to() {
    if !require_service("RabbitMQ", "127.0.0.1:5672") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (queue, control, out, port) = (
        unique("src"),
        unique("control"),
        dir.path().join("out.jsonl"),
        free_port(),
    );
    let broker = Broker::connect().await;
    let cfg = dir.path().join("pipeline.toml");
    std::fs::write(&cfg, pipeline(&queue, &out, port, Some(&control))).unwrap();
    arrivals::declare(&cfg);
    let daemon = Daemon::spawn(&cfg, &[]);
    wait_for(port, "/api/status", None, LIMIT, |a| {
        a.json()["state"] == "running"
    });
    let conn = Connection::connect(AMQP_URL, ConnectionProperties::default())
        .await
        .unwrap();
    let mut asker = Asker::open(&conn).await;
    // The control queue is declared by the daemon once it consumes it.
    let deadline = Instant::now() + LIMIT;
    while !daemon.logs().contains("Control queue consumed") {
        assert!(Instant::now() < deadline, "{}", daemon.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let all = events(3000, 40);
    let publisher = {
        let (queue, all) = (queue.clone(), all.clone());
        tokio::spawn(async move {
            Broker::connect()
                .await
                .publish_steadily(&queue, all, 2000)
                .await;
        })
    };
    while written(&out).len() < 300 {
        assert!(Instant::now() < deadline, "{}", daemon.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused = asker.ask(&control, "not json", "c1", LIMIT).await;
    assert_eq!(refused["status"], "refused", "{refused}");
    let refused = asker
        .ask(
            &control,
            r#"{"sinks.out.batch.max_size": "many"}"#,
            "c2",
            LIMIT,
        )
        .await;
    assert_eq!(
        (refused["status"].as_str(), refused["reason"].as_str()),
        (Some("refused"), Some("invalid")),
        "{refused}"
    );
    let applied = asker
        .ask(
            &control,
            r#"{"sinks.out.batch.max_size": 100, "pipeline.partitions": 4}"#,
            "c3",
            LIMIT,
        )
        .await;
    assert_eq!(applied["status"], "applied", "{applied}");
    assert_eq!(applied["generation"], 2, "{applied}");
    publisher.await.unwrap();
    wait_written(&out, all.len(), &daemon);
    assert_exact(&out, all.len());
    let status = get(port, "/api/status", None).unwrap().json();
    assert_eq!(status["partitions"], 4, "{status}");
    broker.delete(&[queue, control]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconfig_of_a_singleton_standby_is_kept_until_it_leads() {
    if !require_service("PostgreSQL", "127.0.0.1:5432") {
        return;
    }
    let _lock = riverbed_core::testing::lock_service("postgres", false).await;
    let dir = tempfile::tempdir().unwrap();
    let lease = unique("lease");
    let config = |port: u16| {
        let cfg = dir.path().join(format!("{port}.toml"));
        let text = format!(
            "[cluster]\nmode = \"singleton\"\nname = \"{lease}\"\n\
             postgres = {{ url = \"postgres://postgres@127.0.0.1:5432/test\" }}\n\n\
             [pipeline]\npartitions = 2\n\n\
             [source]\nkind = \"generate\"\ndata = \"sensors\"\nrate = 100\n\n\
             [[sinks]]\nname = \"out\"\nkind = \"noop\"\n\n\
             [admin]\nlisten = \"127.0.0.1:{port}\"\n"
        );
        std::fs::write(&cfg, text).unwrap();
        cfg
    };
    let (first, second) = (free_port(), free_port());
    let mut leader = Daemon::spawn(&config(first), &[]);
    tokio::task::spawn_blocking(move || {
        wait_for(first, "/api/status", None, LIMIT, |a| {
            a.json()["leader"]["state"] == "leader"
        })
    })
    .await
    .unwrap();
    let standby = Daemon::spawn(&config(second), &[]);
    tokio::task::spawn_blocking(move || {
        wait_for(second, "/api/status", None, LIMIT, |a| {
            a.json()["state"] == "standby"
        })
    })
    .await
    .unwrap();
    // A standby answers at once: checked and kept, or refused.
    let kept =
        tokio::task::spawn_blocking(move || put_json(second, json!({"pipeline.partitions": 3})))
            .await
            .unwrap();
    assert_eq!(kept.status, 200, "{}", kept.body);
    assert_eq!(kept.json()["standby"], true, "{}", kept.body);
    let refused =
        tokio::task::spawn_blocking(move || put_json(second, json!({"pipeline.partitions": "x"})))
            .await
            .unwrap();
    assert_eq!(refused.status, 422, "{}", refused.body);
    // Once it leads, it runs the kept change.
    leader.kill();
    let led = tokio::task::spawn_blocking(move || {
        wait_for(second, "/api/status", None, LIMIT, |a| {
            a.json()["state"] == "running"
        })
    })
    .await
    .unwrap()
    .json();
    assert_eq!(led["partitions"], 3, "{led}");
    assert_eq!(led["leader"]["state"], "leader", "{led}");
    drop(standby);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconfig_of_a_partitioned_nats_pipeline_keeps_consuming_its_partitions() {
    if !require_service("NATS", "127.0.0.1:4222")
        || !require_service("PostgreSQL", "127.0.0.1:5432")
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (stream, lease, out, port) = (
        unique("nats"),
        unique("plead"),
        dir.path().join("out.jsonl"),
        free_port(),
    );
    let client = async_nats::connect("nats://127.0.0.1:4222").await.unwrap();
    let js = async_nats::jetstream::new(client);
    js.create_stream(async_nats::jetstream::stream::Config {
        name: stream.clone(),
        subjects: vec![format!("{stream}.*.*")],
        ..Default::default()
    })
    .await
    .unwrap();
    let cfg = dir.path().join("pipeline.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[pipeline]
key = "/entity"
partitions = 2

[cluster]
mode = "partitioned"
partitions = 2
name = "{lease}"
lease = "postgres"
postgres = {{ url = "postgres://postgres@127.0.0.1:5432/test" }}

[source]
kind = "nats"
servers = ["nats://127.0.0.1:4222"]
stream = "{stream}"
durable = "d-{{partition}}"
filter_subject = "{stream}.{{partition}}.*"

[[sinks]]
name = "out"
kind = "file"
path = "{}"

[admin]
listen = "127.0.0.1:{port}"
"#,
            out.display()
        ),
    )
    .unwrap();
    let daemon = Daemon::spawn(&cfg, &[]);
    let publish = async |from: u64, to: u64| {
        for (i, (id, body)) in events(to, 20).into_iter().enumerate().skip(from as usize) {
            let subject = format!("{stream}.{}.{id}", i % 2);
            js.publish(subject, serde_json::to_vec(&body).unwrap().into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
    };
    publish(0, 200).await;
    let deadline = Instant::now() + LIMIT;
    while written(&out).len() < 200 {
        assert!(Instant::now() < deadline, "{}", daemon.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let applied =
        tokio::task::spawn_blocking(move || put_json(port, json!({"pipeline.partitions": 3})))
            .await
            .unwrap();
    assert_eq!(applied.status, 200, "{}", applied.body);
    // Both partitions are consumed again by the new pipeline, their leases held on.
    publish(200, 400).await;
    let deadline = Instant::now() + LIMIT;
    while written(&out).len() < 400 {
        assert!(
            Instant::now() < deadline,
            "{} of 400 written after the change; logs:\n{}",
            written(&out).len(),
            daemon.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_exact(&out, 400);
    assert!(
        daemon
            .logs()
            .contains("Partition lease held on; consuming again")
    );
    let _ = js.delete_stream(&stream).await;
}
