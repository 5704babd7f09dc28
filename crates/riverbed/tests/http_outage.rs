//! The HTTP sink through the real `riverbed` binary, RabbitMQ as source: the downstream
//! service answers 503 for a minute mid-run; the circuit breaker opens, the daemon stops
//! taking deliveries (the backlog waits in the broker), nothing is dead-lettered, and once the
//! service is back the backlog drains, each event once, in order per entity.

#[path = "outages/broker.rs"]
mod broker;
#[path = "recipe_transactions/daemon.rs"]
mod daemon;
#[path = "http_outage/service.rs"]
mod service;

use std::time::{Duration, Instant};

use riverbed_core::testing::{lock_service, require_service};

use broker::{AMQP_URL, Broker, events};
use daemon::Daemon;
use service::{Service, serve};

const EVENTS: u64 = 3000;
const RATE: u64 = 200;
const ENTITIES: u64 = 40;
const OUTAGE: Duration = Duration::from_secs(60);

fn unique(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("riverbed_http_{what}_{}_{nanos}", std::process::id())
}

async fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "waited {limit:?} for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The value of the first sample of `metric` labelled `sink="api"` on the admin endpoint.
fn sample(port: u16, metric: &str) -> Option<f64> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    body.lines()
        .find(|l| l.starts_with(&format!("{metric}{{")) && l.contains("sink=\"api\""))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// The status code and body of `GET path` on the admin server.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    Some((head.split(' ').nth(1)?.parse().ok()?, body.to_owned()))
}

fn pipeline(
    dir: &std::path::Path,
    queue: &str,
    addr: std::net::SocketAddr,
    metrics: u16,
) -> std::path::PathBuf {
    let text = format!(
        r#"
[pipeline]
key = "/entity"
# A window (and prefetch) smaller than the backlog: what the daemon does not take waits in
# the broker.
max_in_flight = 256

[source]
kind = "amqp"
urls = ["{AMQP_URL}"]
queue = "{queue}"
dead_letter_queue = "{queue}.dlq"
prefetch = 256

[[sinks]]
name = "api"
kind = "http"
url = "http://{addr}/events"
timeout = "5s"
breaker = {{ open_for = "5s" }}

[admin]
listen = "127.0.0.1:{metrics}"
"#
    );
    let path = dir.join("pipeline.toml");
    std::fs::write(&path, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_riverbed"))
        .arg("declare")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_breaker_opens_on_a_minute_of_503_and_the_daemon_loses_nothing() {
    if !require_service("RabbitMQ", "127.0.0.1:5672") {
        return;
    }
    let _broker_lock = lock_service("rabbitmq", false).await;
    let service = Service::default();
    service.down_after(500);
    let addr = serve(service.clone()).await;
    let queue = unique("q");
    let dir = tempfile::tempdir().unwrap();
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = pipeline(dir.path(), &queue, addr, metrics);
    let broker = Broker::connect().await;
    let mut daemon = Daemon::spawn("riverbed", &config, "info");
    let publisher = tokio::spawn({
        let queue = queue.clone();
        async move {
            Broker::connect()
                .await
                .publish_steadily(&queue, events(EVENTS, ENTITIES), RATE)
                .await
        }
    });
    wait_for("the service to go down", Duration::from_secs(60), || {
        service.is_down()
    })
    .await;
    let (_, opened) = daemon
        .wait_log(
            "Circuit breaker opened; the sink's partitions wait and intake pauses",
            Duration::from_secs(30),
            |_| true,
        )
        .await;
    assert_eq!(opened["sink"], "api");
    assert_eq!(opened["endpoint"], format!("http://{addr}"));
    let state = sample(metrics, "riverbed_breaker_state");
    assert!(
        matches!(state, Some(s) if s > 0.0),
        "open or half-open: {state:?}"
    );
    wait_for(
        "/ready to say the breaker is open",
        Duration::from_secs(15),
        || {
            get(metrics, "/ready").is_some_and(|(code, body)| {
                code == 503 && body.contains("sink api: circuit breaker open")
            })
        },
    )
    .await;
    tokio::time::sleep(OUTAGE).await;
    assert!(
        broker.ready(&queue).await > 0,
        "the backlog waits in the broker, not in the daemon"
    );
    let while_down = service.requests_while_down();
    assert!(
        while_down < 300,
        "the breaker spared the service: {while_down} requests"
    );
    service.come_back();
    publisher.await.unwrap();
    wait_for("every event", Duration::from_secs(120), || {
        service.accepted() == EVENTS as usize
    })
    .await;
    daemon
        .wait_log(
            "Circuit breaker closed; calls flow again",
            Duration::from_secs(10),
            |_| true,
        )
        .await;
    daemon
        .wait_log(
            "Circuit breaker probe failed; open again",
            Duration::from_secs(1),
            |_| true,
        )
        .await;
    assert_eq!(
        sample(metrics, "riverbed_breaker_state"),
        Some(0.0),
        "closed again"
    );
    let (code, body) = get(metrics, "/ready").unwrap();
    assert_eq!(code, 200, "ready once the breaker closed: {body}");
    let (_, status) = get(metrics, "/api/status").unwrap();
    assert!(status.contains(r#""breaker":"closed""#), "{status}");
    let transitions = sample(metrics, "riverbed_breaker_transitions_total").unwrap_or(0.0);
    assert!(transitions >= 1.0, "transitions counted: {transitions}");
    assert_eq!(
        broker.ready(&format!("{queue}.dlq")).await,
        0,
        "nothing dead-lettered"
    );
    for (entity, seqs) in service.order() {
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "{entity} out of order: {seqs:?}"
        );
    }
    daemon.terminate();
    let (status, summary) = daemon.exit(Duration::from_secs(30)).await;
    assert!(status.success(), "{summary}");
    assert_eq!(summary["dead_lettered"], 0, "{summary}");
    assert!(
        summary["unavailable_waits"].as_u64().unwrap() > 0,
        "{summary}"
    );
    broker
        .delete(&[queue.clone(), format!("{queue}.dlq")])
        .await;
}
