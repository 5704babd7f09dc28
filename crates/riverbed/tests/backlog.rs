//! Consumer lag through the real binary (`cargo test backlog`): messages wait at the source
//! while the pipeline's only sink cannot reach its service, and the admin server shows how
//! many, as the broker tells it: `riverbed_source_backlog_messages` and `backlog` in
//! `/api/status`, for a RabbitMQ queue and a JetStream durable.

#[path = "outages/arrivals.rs"]
mod arrivals;
#[path = "outages/broker.rs"]
mod broker;
#[path = "admin/client.rs"]
mod client;

use std::path::Path;
use std::time::Duration;

use riverbed_core::testing::require_service;

use broker::{AMQP_URL, Broker, events};
use client::{Daemon, free_port, get, sample, wait_for};

const LIMIT: Duration = Duration::from_secs(30);

fn unique(what: &str) -> String {
    client::unique("backlog", what)
}

/// A pipeline from `source` into an HTTP service nothing listens for: every message taken
/// waits, and the rest stays at the broker.
fn pipeline(dir: &Path, source: &str, port: u16) -> std::path::PathBuf {
    let cfg = dir.join("pipeline.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"{source}
[[sinks]]
name = "api"
kind = "http"
url = "http://127.0.0.1:{}/events"

[admin]
listen = "127.0.0.1:{port}"
"#,
            free_port()
        ),
    )
    .unwrap();
    cfg
}

/// Waits until the source is connected and `series` shows `expected` (both are sampled every
/// 2 s, the connection first: one sample may show the lag before the connection).
fn wait_backlog(port: u16, series: &str, expected: f64) -> String {
    wait_for(port, "/metrics", None, LIMIT, |a| {
        sample(&a.body, series) == Some(expected)
            && sample(&a.body, "riverbed_source_connected") == Some(1.0)
    })
    .body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_of_a_rabbitmq_queue_is_its_ready_messages() {
    if !require_service("RabbitMQ", "127.0.0.1:5672") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (queue, port) = (unique("q"), free_port());
    let source = format!(
        "[source]\nkind = \"amqp\"\nurls = [\"{AMQP_URL}\"]\nqueue = \"{queue}\"\nprefetch = 20\n"
    );
    let cfg = pipeline(dir.path(), &source, port);
    arrivals::declare(&cfg);
    let broker = Broker::connect().await;
    broker.publish_steadily(&queue, events(500, 10), 5000).await;
    let _daemon = Daemon::spawn(&cfg, &[]);
    // 20 are taken (the prefetch) and wait for the service; 480 stay ready in the queue.
    let series = format!("riverbed_source_backlog_messages{{queue=\"{queue}\"}}");
    let metrics = tokio::task::spawn_blocking(move || wait_backlog(port, &series, 480.0))
        .await
        .unwrap();
    assert_eq!(sample(&metrics, "riverbed_config_generation"), Some(1.0));
    let status = get(port, "/api/status", None).unwrap().json();
    assert_eq!(status["backlog"][0]["queue"], queue.as_str(), "{status}");
    assert_eq!(status["backlog"][0]["messages"], 480, "{status}");
    assert_eq!(broker.ready(&queue).await, 480);
    broker
        .delete(&[queue.clone(), format!("{queue}.dlq")])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_of_a_nats_durable_is_its_pending_count() {
    if !require_service("NATS", "127.0.0.1:4222") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (stream, port) = (unique("s"), free_port());
    let client = async_nats::connect("nats://127.0.0.1:4222").await.unwrap();
    let js = async_nats::jetstream::new(client);
    js.create_stream(async_nats::jetstream::stream::Config {
        name: stream.clone(),
        subjects: vec![format!("{stream}.>")],
        ..Default::default()
    })
    .await
    .unwrap();
    for (id, body) in events(300, 10) {
        js.publish(
            format!("{stream}.{id}"),
            serde_json::to_vec(&body).unwrap().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    let source = format!(
        "[source]\nkind = \"nats\"\nservers = [\"nats://127.0.0.1:4222\"]\nstream = \"{stream}\"\n\
         durable = \"lagging\"\nmax_ack_pending = 20\n"
    );
    let _daemon = Daemon::spawn(&pipeline(dir.path(), &source, port), &[]);
    // 20 are delivered (max_ack_pending) and wait for the service; 280 are pending.
    let series = format!("riverbed_source_backlog_messages{{queue=\"{stream}/lagging\"}}");
    let metrics = tokio::task::spawn_blocking(move || wait_backlog(port, &series, 280.0))
        .await
        .unwrap();
    assert_eq!(sample(&metrics, "riverbed_config_generation"), Some(1.0));
    let _ = js.delete_stream(&stream).await;
}
