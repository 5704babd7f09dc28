//! The HTTP sink against a local flaky service: an outage makes the pipeline wait (nothing
//! dead-lettered, nothing lost, per-key order kept), a refused message is the only one
//! dead-lettered, `Retry-After` is honoured, and a refused connection is an outage too.

mod support;

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use riverbed_core::breaker::BreakerState;
use riverbed_core::testing::{Journal, MemoryDeadLetters, MemorySource, numbered_messages};
use riverbed_core::{KeySpec, Pipeline, Report, Sink};
use riverbed_http::{BodyFormat, HttpSink, HttpSinkConfig};
use support::{Logs, Service, serve, wait_for};

const OUTAGE: Duration = Duration::from_secs(60);

fn config(addr: std::net::SocketAddr) -> HttpSinkConfig {
    let mut c = HttpSinkConfig::new(format!("http://{addr}/events/{{key}}"));
    c.header_fields.insert("X-Seq".into(), "/seq".into());
    c.retry_backoff = Duration::from_millis(20);
    c.timeout = Duration::from_secs(5);
    c
}

/// Runs `n` numbered messages (10 keys) through `sink`; returns the report and dead letters.
async fn run(sink: Arc<HttpSink>, n: usize) -> (Report, Arc<MemoryDeadLetters>) {
    let journal = Journal::default();
    let dl = Arc::new(MemoryDeadLetters::new(journal.clone()));
    let report = Pipeline::builder()
        .source(MemorySource::new(numbered_messages(n, 10), journal))
        .key(KeySpec::JsonPointer("/key".into()))
        .partitions(NonZeroUsize::new(2).unwrap())
        .max_in_flight(NonZeroUsize::new(200).unwrap())
        .sink_with("api", "main", sink as Arc<dyn Sink>, None)
        .dead_letters(dl.clone())
        .build()
        .unwrap()
        .run(std::future::pending())
        .await
        .expect("the run ends cleanly");
    (report, dl)
}

fn seq_of(body: &[u8]) -> u64 {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap();
    v["seq"].as_u64().unwrap()
}

/// Every message accepted, the first acceptances of each key in order.
fn assert_all_accepted_in_key_order(service: &Service, n: u64) {
    let mut seen = std::collections::HashSet::new();
    let mut last: HashMap<String, u64> = HashMap::new();
    for r in service.log().iter().filter(|r| r.status == 200) {
        let seq = seq_of(&r.body);
        if !seen.insert(seq) {
            continue;
        }
        if let Some(prev) = last.insert(r.path_key.clone(), seq) {
            assert!(
                prev < seq,
                "key {}: {seq} accepted after {prev}",
                r.path_key
            );
        }
    }
    assert_eq!(seen.len() as u64, n, "every message accepted");
}

#[tokio::test]
async fn http_outage_of_60s_waits_dead_letters_nothing_and_drains_in_key_order() {
    let logs = Logs::global();
    let service = Service::default();
    service.down_after(300);
    let addr = serve(service.clone(), 0).await;
    let sink = Arc::new(HttpSink::new("outage-api", config(addr)).unwrap());
    let run = tokio::spawn(run(sink.clone(), 2000));
    wait_for("the service to go down", Duration::from_secs(30), || {
        service.is_down()
    })
    .await;
    let down_at = Instant::now();
    tokio::time::sleep(OUTAGE).await;
    service.set_down(false);
    let up_at = Instant::now();
    let (report, dl) = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the backlog drains after recovery")
        .unwrap();
    assert_eq!(
        report.stats.dead_lettered, 0,
        "the outage dead-lettered nothing"
    );
    assert!(dl.letters().is_empty());
    assert_eq!(report.stats.acked, 2000);
    assert!(
        report.stats.unavailable_waits > 0,
        "the writes waited on the breaker"
    );
    assert_all_accepted_in_key_order(&service, 2000);
    let during = service
        .log()
        .iter()
        .filter(|r| r.at > down_at && r.at < up_at)
        .count();
    assert!(
        during < 200,
        "the open breaker keeps requests off the service while down ({during} sent)"
    );
    assert_eq!(sink.breaker().state(), BreakerState::Closed);
    let lines = logs.lines_with("sink=outage-api");
    for (line, to) in [
        ("Circuit breaker opened", "open"),
        ("Circuit breaker half-open", "half_open"),
        ("Circuit breaker probe failed", "open"),
        ("Circuit breaker closed", "closed"),
    ] {
        assert!(
            lines
                .iter()
                .any(|l| l.contains(line) && l.contains(&format!("to=\"{to}\""))),
            "a log line `{line}` with to=\"{to}\" in {lines:#?}"
        );
    }
}

async fn one_refused(body: BodyFormat) {
    let service = Service::default();
    service.refuse(17);
    let addr = serve(service.clone(), 0).await;
    let mut c = config(addr);
    c.body = body;
    let sink = Arc::new(HttpSink::new("api", c).unwrap());
    let (report, dl) = run(sink, 100).await;
    assert_eq!(report.stats.dead_lettered, 1, "only the refused message");
    let letters = dl.letters();
    assert_eq!(letters[0].message.meta.message_id.as_deref(), Some("m17"));
    assert_eq!(letters[0].reason, "http_rejected");
    assert!(
        letters[0].error.contains("HTTP 400 Bad Request"),
        "{}",
        letters[0].error
    );
    assert!(
        letters[0].error.contains("field `seq` refused"),
        "body excerpt: {}",
        letters[0].error
    );
    assert_eq!(letters[0].attempts, 1, "a 400 is not retried");
    assert_eq!(report.stats.acked, 99, "the others committed");
}

#[tokio::test]
async fn http_400_dead_letters_only_that_message() {
    one_refused(BodyFormat::Message).await;
}

#[tokio::test]
async fn http_400_in_a_json_array_batch_dead_letters_only_that_message() {
    one_refused(BodyFormat::JsonArray).await;
}

#[tokio::test]
async fn http_requests_carry_idempotency_key_and_field_headers() {
    let service = Service::default();
    let addr = serve(service.clone(), 0).await;
    let sink = Arc::new(HttpSink::new("api", config(addr)).unwrap());
    let (report, _) = run(sink, 20).await;
    assert_eq!(report.stats.acked, 20);
    for r in service.log() {
        let seq = seq_of(&r.body);
        assert_eq!(r.idempotency_key, Some(format!("m{seq}")));
        assert_eq!(r.headers["x-seq"], seq.to_string().as_str());
        assert_eq!(r.path_key, format!("k{}", seq % 10));
        assert_eq!(r.headers["content-type"], "application/json");
    }
}

#[tokio::test]
async fn http_ndjson_batches_hold_one_payload_per_line() {
    let service = Service::default();
    let addr = serve(service.clone(), 0).await;
    let mut c = HttpSinkConfig::new(format!("http://{addr}/events/all"));
    c.body = BodyFormat::Ndjson;
    let (report, _) = run(Arc::new(HttpSink::new("api", c).unwrap()), 300).await;
    assert_eq!(report.stats.acked, 300);
    let log = service.log();
    assert!(log.len() < 300, "batched: {} requests", log.len());
    let lines: usize = log
        .iter()
        .map(|r| {
            assert_eq!(r.headers["content-type"], "application/x-ndjson");
            let k = r.idempotency_key.as_deref().unwrap_or_default();
            assert!(k.starts_with("batch-") || k.starts_with('m'), "{k}");
            r.body
                .split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .count()
        })
        .sum();
    assert_eq!(lines, 300);
}

#[tokio::test]
async fn http_429_retry_after_is_honoured() {
    let service = Service::default();
    service.throttle_once(5, 1);
    let addr = serve(service.clone(), 0).await;
    let (report, _) = run(Arc::new(HttpSink::new("api", config(addr)).unwrap()), 10).await;
    assert_eq!((report.stats.acked, report.stats.dead_lettered), (10, 0));
    let tries: Vec<_> = service
        .log()
        .into_iter()
        .filter(|r| seq_of(&r.body) == 5)
        .collect();
    assert_eq!(
        tries.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![429, 200]
    );
    let waited = tries[1].at - tries[0].at;
    assert!(
        waited >= Duration::from_secs(1),
        "waited {waited:?} of Retry-After: 1"
    );
}

#[tokio::test]
async fn http_connection_refused_waits_until_the_service_listens() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = free.local_addr().unwrap();
    drop(free);
    let sink = Arc::new(HttpSink::new("api", config(addr)).unwrap());
    let run = tokio::spawn(run(sink.clone(), 200));
    let breaker = sink.clone();
    wait_for("the breaker to open", Duration::from_secs(30), move || {
        breaker.breaker().state() == BreakerState::Open
    })
    .await;
    let service = Service::default();
    serve(service.clone(), addr.port()).await;
    let (report, dl) = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("drains once the service listens")
        .unwrap();
    assert_eq!((report.stats.acked, report.stats.dead_lettered), (200, 0));
    assert!(dl.letters().is_empty());
    assert_all_accepted_in_key_order(&service, 200);
}
