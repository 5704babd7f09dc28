//! A nats-server restart mid-stream: the source renews its pull and goes on; nothing is lost
//! and each key's messages are committed in stream order. Takes the server lock exclusively
//! and restores the shared server even when it fails.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{ADDR, DeleteStreams, LIMIT, Raw, Recorder, available, server, source_config};
use riverbed_core::Pipeline;
use riverbed_nats::NatsSource;

fn answers() -> bool {
    TcpStream::connect_timeout(&ADDR.parse().unwrap(), Duration::from_millis(200)).is_ok()
}

fn wait_for(what: &str, limit: Duration, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn server_pids() -> Vec<String> {
    let out = Command::new("pgrep")
        .args(["-f", "nats-server.*4222"])
        .output()
        .expect("pgrep runs");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// Starts the shared server the way the machine runs it (a no-op if it runs).
fn start_server() {
    let status = Command::new("start-stop-daemon")
        .args([
            "--start",
            "--oknodo",
            "--background",
            "--exec",
            "/usr/sbin/nats-server",
        ])
        .args([
            "--",
            "-a",
            "127.0.0.1",
            "-p",
            "4222",
            "-js",
            "-sd",
            "/var/lib/nats-server",
        ])
        .status()
        .expect("start-stop-daemon runs");
    assert!(status.success(), "nats-server started: {status}");
    wait_for("nats-server to answer", Duration::from_secs(30), answers);
}

/// Kills the shared server and waits until it is gone.
fn stop_server() {
    let pids = server_pids();
    assert!(!pids.is_empty(), "the shared nats-server runs");
    for pid in &pids {
        let _ = Command::new("kill").arg(pid).status();
    }
    wait_for("nats-server to exit", Duration::from_secs(30), || {
        server_pids().is_empty() && !answers()
    });
}

/// Restarts the shared server when dropped if it is not running (a failed test).
struct RestoreServer;

impl Drop for RestoreServer {
    fn drop(&mut self) {
        if !answers() {
            start_server();
        }
    }
}

/// Publishes `from..to` like `Raw::publish_range`, retrying while JetStream comes back.
async fn publish_retrying(raw: &Raw, prefix: &str, from: usize, to: usize, keys: usize) {
    for n in from..to {
        let deadline = Instant::now() + LIMIT;
        loop {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", format!("m{n}").as_str());
            let subject = format!("{prefix}.k{}", n % keys);
            let sent = raw
                .js
                .publish_with_headers(subject, headers, "{}".into())
                .await;
            let acked = match sent {
                Ok(ack) => ack.await.is_ok(),
                Err(_) => false,
            };
            if acked {
                break;
            }
            assert!(Instant::now() < deadline, "publish m{n} after the restart");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_server_restart_mid_stream_loses_nothing_and_keeps_per_key_order() {
    if !available() {
        return;
    }
    let _exclusive = server(true).await;
    let _restore = RestoreServer;
    common::bounded(async {
        let stream = common::unique("restart");
        let _cleanup = DeleteStreams(vec![stream.clone(), format!("{stream}_dlq")]);
        let raw = Raw::connect().await;
        raw.create_stream(&stream, &[&format!("{stream}.>")]).await;
        const HALF: usize = 600;
        const KEYS: usize = 20;
        raw.publish_range(&stream, 0, HALF, KEYS).await;

        let extra = "ack_wait = \"5s\"\nidle_heartbeat = \"1s\"\nexpires = \"5s\"\nbatch = 50";
        let source = NatsSource::new(source_config(&stream, "d", extra)).unwrap();
        let status = source.status();
        let sink = Recorder::new().slowed(Duration::from_millis(5));
        let committed = sink.committed.clone();
        let pipeline = Pipeline::builder()
            .source(source)
            .key(riverbed_core::KeySpec::Subject)
            .sink("rec", sink)
            .build()
            .unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let run = tokio::spawn(pipeline.run(async move {
            let _ = stopped.await;
        }));
        let distinct = || {
            committed
                .lock()
                .unwrap()
                .iter()
                .map(|s| s.id.clone())
                .collect::<BTreeSet<_>>()
                .len()
        };
        common::wait_until("some committed before the restart", LIMIT, || {
            distinct() >= 100
        })
        .await;
        let before = distinct();
        tokio::task::spawn_blocking(stop_server).await.unwrap();
        // While the server is down the idle heartbeats stop: the source notices and renews
        // its pull (retrying until the server is back) instead of waiting silently.
        common::wait_until("the missed heartbeats noticed", LIMIT, || {
            status.renewals() >= 1
        })
        .await;
        tokio::task::spawn_blocking(start_server).await.unwrap();
        assert!(
            before < HALF,
            "the restart came mid-stream ({before} committed)"
        );
        publish_retrying(&raw, &stream, HALF, 2 * HALF, KEYS).await;
        common::wait_until("everything committed after the restart", LIMIT, || {
            distinct() >= 2 * HALF
        })
        .await;
        stop.send(()).unwrap();
        run.await.unwrap().unwrap();

        let seen = committed.lock().unwrap().clone();
        let mut first: BTreeMap<String, u64> = BTreeMap::new();
        let mut per_key: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for s in &seen {
            let p = s.position.expect("a position");
            if first.insert(s.id.clone(), p).is_none() {
                per_key
                    .entry(s.subject.clone().unwrap())
                    .or_default()
                    .push(p);
            }
        }
        assert_eq!(first.len(), 2 * HALF, "nothing lost");
        for (key, positions) in &per_key {
            assert!(
                positions.windows(2).all(|w| w[0] < w[1]),
                "{key} committed out of order: {positions:?}"
            );
        }
        eprintln!(
            "restart: {} commits for {} messages, {} pull renewals",
            seen.len(),
            2 * HALF,
            status.renewals()
        );
        assert!(
            seen.len() < 4 * HALF,
            "redeliveries stay bounded: {}",
            seen.len()
        );
    })
    .await;
}
