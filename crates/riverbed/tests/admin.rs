//! The admin server through the real binary (`cargo test admin`): `/health` without the token,
//! 401 on every other route without it, `/metrics` with HELP lines and real histograms,
//! `/api/status` counters while messages flow, `/api/config` without a secret, and `/ready`
//! following the RabbitMQ source's connection and a singleton standby.

#[path = "outages/broker.rs"]
mod broker;
#[path = "admin/client.rs"]
mod client;

use std::time::Duration;

use riverbed_core::testing::{lock_service, require_service};

use broker::{AMQP_URL, Broker, events};
use client::{Daemon, free_port, get, wait_for};

const TOKEN: &str = "t0ken-for-the-admin-test";
const LIMIT: Duration = Duration::from_secs(30);

fn unique(what: &str) -> String {
    client::unique("admin", what)
}

/// The value of the first sample line of `body` that starts with `name`.
fn sample(body: &str, name: &str) -> f64 {
    client::sample(body, name).unwrap_or(0.0)
}

#[test]
fn admin_routes_answer_behind_the_token_while_messages_flow() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let port = free_port();
    let cfg = dir.path().join("sensors.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[source]
kind = "generate"
data = "sensors"
rate = 2000
malformed_every = 100

[pipeline]
key = "/sensor_id"
partitions = 3

[[processors]]
name = "not-the-secret"
kind = "filter"
field = "/sensor_id"
equals = ["${{ADMIN_TEST_SECRET}}"]
negate = true

[[sinks]]
name = "out"
kind = "noop"

[dead_letter]
kind = "log"

[admin]
listen = "127.0.0.1:{port}"
token_file = "{}"
"#,
            token_file.display()
        ),
    )
    .unwrap();
    let secret = "env-s3cret-value";
    let mut daemon = Daemon::spawn(&cfg, &[("ADMIN_TEST_SECRET", secret)]);

    let health = wait_for(port, "/health", None, LIMIT, |a| a.status == 200);
    assert_eq!(health.json(), serde_json::json!({"status": "alive"}));
    for path in ["/metrics", "/ready", "/api/status", "/api/config"] {
        assert_eq!(
            get(port, path, None).unwrap().status,
            401,
            "{path} without a token"
        );
        let wrong = get(port, path, Some("t0ken-for-the-admin-tesT")).unwrap();
        assert_eq!(wrong.status, 401, "{path} with a wrong token");
    }

    let status = wait_for(port, "/api/status", Some(TOKEN), LIMIT, |a| {
        let v = a.json();
        v["counters"]["acked"].as_u64() >= Some(500)
            && v["counters"]["dead_lettered"].as_u64() >= Some(2)
    })
    .json();
    assert_eq!(status["pipeline"], "sensors");
    assert_eq!(status["source"], "generate");
    assert_eq!(status["partitions"], 3);
    assert_eq!(status["sinks"][0]["name"], "out");
    assert_eq!(status["sinks"][0]["kind"], "noop");
    assert_eq!(status["state"], "running");
    assert_eq!(status["leader"], serde_json::Value::Null);
    let c = &status["counters"];
    assert!(c["received"].as_u64() >= c["acked"].as_u64(), "{c}");
    assert_eq!(c["filtered"], 0, "no sensor id equals the secret: {c}");

    let ready = get(port, "/ready", Some(TOKEN)).unwrap();
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(ready.json()["role"], "single");

    let metrics = wait_for(port, "/metrics", Some(TOKEN), LIMIT, |a| {
        a.body.contains("riverbed_sink_write_seconds_bucket{")
    })
    .body;
    assert!(
        sample(&metrics, "riverbed_messages_acked_total") >= 500.0,
        "{metrics}"
    );
    for line in [
        "# HELP riverbed_messages_acked_total",
        "# TYPE riverbed_sink_write_seconds histogram",
        "# TYPE riverbed_sink_batch_size histogram",
        "# HELP riverbed_messages_in_flight",
        "riverbed_messages_in_flight ",
        "riverbed_build_info{version=\"",
        "riverbed_dead_letters_total{reason=\"",
    ] {
        assert!(metrics.contains(line), "no `{line}` in {metrics}");
    }
    let bucket = metrics
        .lines()
        .find(|l| l.starts_with("riverbed_sink_write_seconds_bucket{"))
        .unwrap();
    assert!(bucket.contains("le=\"0.001\""), "{bucket}");
    let batch = metrics
        .lines()
        .find(|l| l.starts_with("riverbed_sink_batch_size_bucket{") && l.contains("le=\"1000\""));
    assert!(
        batch.is_some(),
        "batch sizes have their own buckets: {metrics}"
    );
    assert!(
        !metrics.contains("quantile="),
        "histograms, not summaries: {metrics}"
    );

    let config = get(port, "/api/config", Some(TOKEN)).unwrap();
    assert_eq!(config.status, 200);
    let shown = config.json();
    assert_eq!(shown["source"]["kind"], "generate");
    assert_eq!(shown["processors"][0]["equals"][0], "***");
    assert!(!config.body.contains(secret), "{}", config.body);
    assert!(!config.body.contains(TOKEN), "{}", config.body);

    daemon.kill();
    let logs = daemon.logs();
    assert!(logs.contains("Admin server listening"), "{logs}");
    assert!(!logs.contains(TOKEN) && !logs.contains(secret), "{logs}");
}

#[test]
fn admin_ready_says_which_sink_cannot_reach_its_destination() {
    let dir = tempfile::tempdir().unwrap();
    let (port, refused) = (free_port(), free_port());
    let cfg = dir.path().join("down.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[source]
kind = "generate"
data = "sensors"
rate = 200

[[sinks]]
name = "api"
kind = "http"
url = "http://app:http-pa55@127.0.0.1:{refused}/events"

[admin]
listen = "127.0.0.1:{port}"
"#
        ),
    )
    .unwrap();
    let _daemon = Daemon::spawn(&cfg, &[]);
    let down = wait_for(port, "/ready", None, LIMIT, |a| {
        a.status == 503 && a.body.contains("sink api")
    });
    let v = down.json();
    assert_eq!(v["status"], "not_ready");
    assert!(v["reason"].as_str().unwrap().contains("sink api: "), "{v}");
    let status = get(port, "/api/status", None).unwrap().json();
    assert_eq!(status["counters"]["acked"], 0, "{status}");
    assert_eq!(status["sinks"][0]["kind"], "http");
    let config = get(port, "/api/config", None).unwrap();
    assert!(!config.body.contains("http-pa55"), "{}", config.body);
    assert!(
        config.body.contains("http://***@127.0.0.1:"),
        "{}",
        config.body
    );
}

fn amqp_pipeline(dir: &std::path::Path, url: &str, queue: &str, port: u16) -> std::path::PathBuf {
    let cfg = dir.join(format!("{port}.toml"));
    std::fs::write(
        &cfg,
        format!(
            r#"[source]
kind = "amqp"
urls = ["{url}"]
queue = "{queue}"
reconnect_initial = "100ms"
reconnect_max = "500ms"

[[sinks]]
name = "out"
kind = "noop"

[dead_letter]
kind = "log"

[admin]
listen = "127.0.0.1:{port}"
token_env = "RIVERBED_ADMIN_TOKEN"
"#
        ),
    )
    .unwrap();
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_ready_follows_the_amqp_source_connection() {
    if !require_service("RabbitMQ", "127.0.0.1:5672") {
        return;
    }
    let _lock = lock_service("rabbitmq", false).await;
    let dir = tempfile::tempdir().unwrap();
    let queue = unique("q");
    let env = [("RIVERBED_ADMIN_TOKEN", TOKEN)];

    // Nothing listens on this port: the source cannot connect, the instance is not ready.
    let password = "pa55-in-the-url";
    let nowhere = format!("amqp://riverbed:{password}@127.0.0.1:{}/%2f", free_port());
    let port = free_port();
    let cfg = amqp_pipeline(dir.path(), &nowhere, &queue, port);
    let mut daemon = Daemon::spawn(&cfg, &env);
    let not_ready = tokio::task::spawn_blocking(move || {
        wait_for(port, "/ready", Some(TOKEN), LIMIT, |a| {
            a.status == 503 && a.body.contains("cannot connect")
        })
    })
    .await
    .unwrap();
    let v = not_ready.json();
    assert_eq!(v["status"], "not_ready");
    assert_eq!(v["problems"][0]["what"], "source", "{v}");
    assert_eq!(get(port, "/health", None).unwrap().status, 200);
    let config = get(port, "/api/config", Some(TOKEN)).unwrap();
    assert!(!config.body.contains(password), "{}", config.body);
    assert!(!not_ready.body.contains(password), "{}", not_ready.body);
    let shown = config.json()["source"]["urls"][0]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(shown.starts_with("amqp://***@127.0.0.1:"), "{shown}");
    daemon.kill();
    assert!(!daemon.logs().contains(password), "{}", daemon.logs());

    // The real broker: ready, and the counters follow the messages through.
    let port = free_port();
    let cfg = amqp_pipeline(dir.path(), AMQP_URL, &queue, port);
    let daemon = Daemon::spawn(&cfg, &env);
    let ready = tokio::task::spawn_blocking(move || {
        wait_for(port, "/ready", Some(TOKEN), LIMIT, |a| a.status == 200)
    })
    .await
    .unwrap();
    assert_eq!(ready.json()["status"], "ready");
    let broker = Broker::connect().await;
    broker.publish_steadily(&queue, events(200, 10), 2000).await;
    let status = tokio::task::spawn_blocking(move || {
        wait_for(port, "/api/status", Some(TOKEN), LIMIT, |a| {
            a.json()["counters"]["acked"].as_u64() >= Some(200)
        })
    })
    .await
    .unwrap()
    .json();
    assert_eq!(status["counters"]["received"], 200, "{status}");
    assert_eq!(status["counters"]["in_flight"], 0, "{status}");
    assert_eq!(status["source"], "amqp");
    drop(daemon);
    broker
        .delete(&[queue.clone(), format!("{queue}.dlq")])
        .await;
}

fn nats_pipeline(
    dir: &std::path::Path,
    server: &str,
    stream: &str,
    port: u16,
) -> std::path::PathBuf {
    let cfg = dir.join(format!("{port}.toml"));
    std::fs::write(
        &cfg,
        format!(
            r#"[source]
kind = "nats"
servers = ["{server}"]
stream = "{stream}"
stream_subjects = ["{stream}.>"]
durable = "riverbed"
connect_timeout = "1s"

[[sinks]]
name = "out"
kind = "noop"

[dead_letter]
kind = "log"

[admin]
listen = "127.0.0.1:{port}"
"#
        ),
    )
    .unwrap();
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_ready_follows_the_nats_source_pull() {
    if !require_service("NATS", "127.0.0.1:4222") {
        return;
    }
    let _lock = lock_service("nats", false).await;
    let dir = tempfile::tempdir().unwrap();
    let stream = unique("s");
    let password = "nats-pa55-in-the-url";
    let nowhere = format!("nats://riverbed:{password}@127.0.0.1:{}", free_port());
    let port = free_port();
    let mut daemon = Daemon::spawn(&nats_pipeline(dir.path(), &nowhere, &stream, port), &[]);
    let not_ready = tokio::task::spawn_blocking(move || {
        wait_for(port, "/ready", None, LIMIT, |a| {
            a.status == 503 && a.body.contains("cannot pull")
        })
    })
    .await
    .unwrap();
    assert!(!not_ready.body.contains(password), "{}", not_ready.body);
    daemon.kill();

    let port = free_port();
    let cfg = nats_pipeline(dir.path(), "nats://127.0.0.1:4222", &stream, port);
    let daemon = Daemon::spawn(&cfg, &[]);
    let ready = tokio::task::spawn_blocking(move || {
        wait_for(port, "/ready", None, LIMIT, |a| a.status == 200)
    })
    .await
    .unwrap();
    assert_eq!(ready.json()["status"], "ready");
    drop(daemon);
    let client = async_nats::connect("nats://127.0.0.1:4222").await.unwrap();
    let _ = async_nats::jetstream::new(client)
        .delete_stream(&stream)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_serves_a_singleton_standby_as_ready() {
    if !require_service("PostgreSQL", "127.0.0.1:5432") {
        return;
    }
    let _lock = lock_service("postgres", false).await;
    let dir = tempfile::tempdir().unwrap();
    let lease = unique("lease");
    let config = |port: u16| {
        let cfg = dir.path().join(format!("{port}.toml"));
        std::fs::write(
            &cfg,
            format!(
                r#"[cluster]
mode = "singleton"
name = "{lease}"
postgres = {{ url = "postgres://postgres@127.0.0.1:5432/test" }}

[source]
kind = "generate"
data = "sensors"
rate = 100

[[sinks]]
name = "out"
kind = "noop"

[admin]
listen = "127.0.0.1:{port}"
"#
            ),
        )
        .unwrap();
        cfg
    };
    let (first, second) = (free_port(), free_port());
    let _leader = Daemon::spawn(&config(first), &[]);
    let led = tokio::task::spawn_blocking(move || {
        wait_for(first, "/api/status", None, LIMIT, |a| {
            a.json()["leader"]["state"] == "leader"
        })
    })
    .await
    .unwrap()
    .json();
    assert_eq!(led["leader"]["lease"], lease.as_str());
    let standby = Daemon::spawn(&config(second), &[]);
    let ready = tokio::task::spawn_blocking(move || {
        wait_for(second, "/ready", None, LIMIT, |a| a.status == 200)
    })
    .await
    .unwrap()
    .json();
    assert_eq!(ready["role"], "standby", "{ready}");
    let status = get(second, "/api/status", None).unwrap().json();
    assert_eq!(status["state"], "standby", "{status}");
    assert_eq!(status["leader"]["state"], "standby", "{status}");
    assert_eq!(
        status["counters"],
        serde_json::Value::Null,
        "a standby consumes nothing"
    );
    let deadline = std::time::Instant::now() + LIMIT;
    while !standby.logs().contains("Standing by") {
        assert!(std::time::Instant::now() < deadline, "{}", standby.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = get(second, "/api/status", None).unwrap().json();
    assert_eq!(status["state"], "standby", "{status}");
    let first_status = get(first, "/ready", None).unwrap();
    assert_eq!(first_status.status, 200);
    assert_eq!(first_status.json()["role"], "leader");
}
