//! `riverbed dlq` end to end with the real binary: letters dead-lettered by a real pipeline run
//! on RabbitMQ are listed and shown without being consumed, redriven by filter and by id
//! (only those reach the source queue, the others stay), purged; a redrive SIGKILLed mid-way
//! loses no letter; the embedded dead-letter table takes the same commands.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use lapin::types::{AMQPValue, FieldTable};
use riverbed_core::testing::{lock_service, require_service};

#[path = "dlq/broker.rs"]
mod broker;
#[path = "dlq/embedded.rs"]
mod embedded;

use broker::{AMQP_URL, Broker, letters, text, unique};

fn riverbed(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_riverbed"))
        .args(args)
        .env("RIVERBED_LOG", "warn")
        .output()
        .unwrap()
}

/// Runs `riverbed dlq ARGS`, asserting success and that no credential was printed.
fn dlq(args: &[&str]) -> String {
    let out = riverbed(&[&["dlq"], args].concat());
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "dlq {args:?}: {stderr}");
    assert!(!format!("{stdout}{stderr}").contains("guest:guest"));
    stdout
}

fn texts(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn pipeline(dir: &Path, queue: &str, url: &str) -> std::path::PathBuf {
    let file = dir.join("pipeline.toml");
    std::fs::write(
        &file,
        format!(
            "[pipeline]\nkey = \"/id\"\n[source]\nkind = \"amqp\"\nurls = [\"{url}\"]\n\
             queue = \"{queue}\"\n[[sinks]]\nname = \"out\"\nkind = \"noop\"\n"
        ),
    )
    .unwrap();
    file
}

/// Runs the pipeline until its dead-letter queue holds `letters` and its queue is empty, then
/// stops it with SIGTERM.
async fn run_until_dead_lettered(broker: &Broker, file: &Path, queue: &str, letters: u32) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_riverbed"))
        .args(["run", "--quiet"])
        .arg(file)
        .env("RIVERBED_LOG", "error")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    broker.wait_depth(&format!("{queue}.dlq"), letters).await;
    broker.wait_depth(queue, 0).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(child.wait().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_lists_shows_redrives_by_filter_and_id_and_purges_letters_of_a_pipeline_run() {
    if !require_service("RabbitMQ", "127.0.0.1:5672") {
        return;
    }
    let _lock = lock_service("rabbitmq", false).await;
    let queue = unique("dlq_run");
    let dlq_name = format!("{queue}.dlq");
    let dir = tempfile::tempdir().unwrap();
    let file = pipeline(dir.path(), &queue, AMQP_URL);
    let f = file.to_str().unwrap();
    let broker = Broker::connect().await;
    broker.delete(&[&queue, &dlq_name]).await;
    assert!(riverbed(&["declare", f]).status.success());

    // m0..m4 are fine, m5..m7 are not JSON, m8 and m9 have no `/id`.
    let mut user = FieldTable::default();
    user.insert("tenant".into(), text("acme"));
    let messages = (0..10)
        .map(|i| {
            let body = match i {
                0..5 => format!("{{\"id\":\"k{i}\"}}"),
                5..8 => format!("not json {i}"),
                _ => format!("{{\"n\":{i}}}"),
            };
            (format!("m{i}"), body.into_bytes(), user.clone())
        })
        .collect();
    broker.publish(&queue, messages).await;
    run_until_dead_lettered(&broker, &file, &queue, 5).await;

    let listed = json_lines(&dlq(&["list", f]));
    let reasons: BTreeMap<String, String> = listed
        .iter()
        .map(|l| {
            (
                l["id"].as_str().unwrap().into(),
                l["reason"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(reasons.len(), 5, "{listed:?}");
    assert_eq!(reasons["m5"], "malformed_payload");
    assert_eq!(reasons["m8"], "missing_key");
    assert_eq!(listed[0]["attempts"], 1);
    assert!(listed[0]["error"].as_str().is_some_and(|e| !e.is_empty()));
    assert_eq!(broker.depth(&dlq_name).await, 5, "listing consumes nothing");
    assert_eq!(json_lines(&dlq(&["list", f, "--limit", "2"])).len(), 2);
    assert_eq!(json_lines(&dlq(&["list", f, "--since", "1h"])).len(), 5);
    let future = ["list", f, "--since", "2099-01-01T00:00:00Z"];
    assert!(dlq(&future).is_empty());
    let missing = json_lines(&dlq(&["list", f, "--filter", "reason=missing_key"]));
    assert_eq!(missing.len(), 2);

    let shown: serde_json::Value = serde_json::from_str(&dlq(&["show", f, "m6"])).unwrap();
    assert_eq!(shown["payload"], "not json 6");
    assert_eq!(shown["reason"], "malformed_payload");
    assert_eq!(shown["headers"]["tenant"], "acme");
    assert_eq!(shown["original_routing_key"], queue.as_str());
    let absent = riverbed(&["dlq", "show", f, "m0"]);
    assert!(!absent.status.success());
    assert!(texts(&absent).1.contains("no dead letter `m0`"));
    assert_eq!(broker.depth(&dlq_name).await, 5, "showing consumes nothing");

    // Only the missing-key letters go back; the others stay.
    let summary: serde_json::Value =
        serde_json::from_str(&dlq(&["redrive", f, "--filter", "reason=missing_key"])).unwrap();
    assert_eq!(summary["redriven"], 2, "{summary}");
    assert_eq!(summary["left"], 3, "{summary}");
    assert_eq!(broker.depth(&dlq_name).await, 3);
    let back = broker.drain(&queue).await;
    assert_eq!(back.keys().collect::<Vec<_>>(), ["m8", "m9"]);
    let headers = &back["m8"].1;
    assert_eq!(
        headers.inner().get("tenant"),
        Some(&text("acme")),
        "headers kept"
    );
    assert!(!headers.contains_key("x-riverbed-reason"), "{headers:?}");
    assert_eq!(
        headers.inner().get("x-riverbed-redriven"),
        Some(&AMQPValue::LongLongInt(1))
    );

    // By id.
    let summary: serde_json::Value = serde_json::from_str(&dlq(&["redrive", f, "m7"])).unwrap();
    assert_eq!(summary["redriven"], 1, "{summary}");
    assert_eq!(
        broker.drain(&queue).await.keys().collect::<Vec<_>>(),
        ["m7"]
    );
    let left = json_lines(&dlq(&["list", f]));
    let ids: Vec<&str> = left.iter().map(|l| l["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["m5", "m6"], "in queue order");

    let refused = riverbed(&["dlq", "purge", f]);
    assert!(!refused.status.success());
    assert!(texts(&refused).1.contains("--yes"));
    assert_eq!(broker.depth(&dlq_name).await, 2);
    let purged: serde_json::Value =
        serde_json::from_str(&dlq(&["purge", f, "m5", "--yes"])).unwrap();
    assert_eq!(purged["purged"], 1);
    let purged: serde_json::Value = serde_json::from_str(&dlq(&["purge", f, "--yes"])).unwrap();
    assert_eq!(purged["purged"], 1);
    assert_eq!(broker.depth(&dlq_name).await, 0);
    assert_eq!(
        broker.depth(&queue).await,
        0,
        "purging sends nothing anywhere"
    );

    // A refused login names the broker without the password.
    let wrong = pipeline(
        dir.path(),
        &queue,
        "amqp://guest:hunter2@127.0.0.1:5672/%2f",
    );
    let out = riverbed(&["dlq", "list", wrong.to_str().unwrap()]);
    let (stdout, stderr) = texts(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("127.0.0.1"), "{stderr}");
    assert!(!format!("{stdout}{stderr}").contains("hunter2"), "{stderr}");
    broker.delete(&[&queue, &dlq_name]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_redrive_killed_mid_way_loses_no_letter() {
    if !require_service("RabbitMQ", "127.0.0.1:5672") {
        return;
    }
    let _lock = lock_service("rabbitmq", false).await;
    const N: usize = 6000;
    const BATCH: u32 = 20;
    let queue = unique("dlq_kill");
    let dlq_name = format!("{queue}.dlq");
    let dir = tempfile::tempdir().unwrap();
    let file = pipeline(dir.path(), &queue, AMQP_URL);
    let f = file.to_str().unwrap();
    let broker = Broker::connect().await;
    broker.delete(&[&queue, &dlq_name]).await;
    assert!(riverbed(&["declare", f]).status.success());
    broker.publish(&dlq_name, letters(N)).await;

    let mut child = Command::new(env!("CARGO_BIN_EXE_riverbed"))
        .args(["dlq", "redrive", f, "--batch", &BATCH.to_string()])
        .env("RIVERBED_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while broker.depth(&queue).await < 500 {
        assert!(Instant::now() < deadline, "the redrive never got going");
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before the kill"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let redriven = broker.depth(&queue).await;
    assert!(
        (redriven as usize) < N,
        "killed mid-way: {redriven} of {N} redriven"
    );
    // The killed connection's unacknowledged letters go back to the dead-letter queue.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (q, d) = (broker.depth(&queue).await, broker.depth(&dlq_name).await);
        let duplicates = (q + d) as usize - N.min((q + d) as usize);
        if q as usize + d as usize >= N {
            eprintln!("killed after {redriven} of {N}: {duplicates} in both queues");
            assert!(duplicates <= BATCH as usize, "{duplicates} duplicates");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "letters missing: {q} + {d} < {N}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A second run redrives the rest; every letter arrived, at most one batch twice.
    let summary: serde_json::Value = serde_json::from_str(&dlq(&["redrive", f])).unwrap();
    assert_eq!(summary["failed"], 0, "{summary}");
    assert_eq!(broker.depth(&dlq_name).await, 0);
    let arrived = broker.drain(&queue).await;
    assert_eq!(arrived.len(), N, "every letter arrived");
    let twice: Vec<_> = arrived.iter().filter(|(_, (n, _))| *n > 1).collect();
    assert!(twice.len() <= BATCH as usize, "{} twice", twice.len());
    assert!(arrived.values().all(|(n, _)| *n <= 2));
    broker.delete(&[&queue, &dlq_name]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_redrive_that_cannot_deliver_keeps_every_letter() {
    if !require_service("RabbitMQ", "127.0.0.1:5672") {
        return;
    }
    let _lock = lock_service("rabbitmq", false).await;
    let queue = unique("dlq_unroutable");
    let dlq_name = format!("{queue}.dlq");
    let dir = tempfile::tempdir().unwrap();
    let file = pipeline(dir.path(), &queue, AMQP_URL);
    let f = file.to_str().unwrap();
    let broker = Broker::connect().await;
    assert!(riverbed(&["declare", f]).status.success());
    // The letters came through an exchange that routes nowhere now.
    let exchange = unique("dlq_nowhere");
    broker
        .ch
        .exchange_declare(
            exchange.as_str().into(),
            lapin::ExchangeKind::Direct,
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut sent = letters(30);
    for (_, _, h) in &mut sent {
        h.insert("x-riverbed-original-exchange".into(), text(&exchange));
        h.insert("x-riverbed-original-subject".into(), text("gone"));
    }
    broker.publish(&dlq_name, sent).await;

    let out = riverbed(&["dlq", "redrive", f, "--via-exchange", "--batch", "7"]);
    let (stdout, stderr) = texts(&out);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stderr.contains("30 letters could not be redriven"),
        "{stderr}"
    );
    assert!(stderr.contains("unroutable"), "{stderr}");
    let summary: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        (summary["redriven"].as_u64(), summary["failed"].as_u64()),
        (Some(0), Some(30))
    );
    assert_eq!(broker.depth(&dlq_name).await, 30, "every letter stays");
    assert_eq!(json_lines(&dlq(&["list", f, "--limit", "1000"])).len(), 30);

    // To the pipeline's queue they go, and leave the dead-letter queue.
    let summary: serde_json::Value = serde_json::from_str(&dlq(&["redrive", f])).unwrap();
    assert_eq!(summary["redriven"], 30);
    assert_eq!(broker.depth(&queue).await, 30);
    assert_eq!(broker.depth(&dlq_name).await, 0);
    let _ = broker
        .ch
        .exchange_delete(exchange.as_str().into(), Default::default())
        .await;
    broker.delete(&[&queue, &dlq_name]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_browsing_a_quorum_dead_letter_queue_keeps_its_order() {
    if !require_service("RabbitMQ", "127.0.0.1:5672") {
        return;
    }
    let _lock = lock_service("rabbitmq", false).await;
    let queue = unique("dlq_quorum");
    let dlq_name = format!("{queue}.dlq");
    let dir = tempfile::tempdir().unwrap();
    let file = pipeline(dir.path(), &queue, AMQP_URL);
    let text_of = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        text_of.replace("queue = ", "queue_type = \"quorum\"\nqueue = "),
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let broker = Broker::connect().await;
    assert!(riverbed(&["declare", f]).status.success());
    let mut sent = letters(12);
    for (i, (_, _, h)) in sent.iter_mut().enumerate() {
        let reason = if i % 3 == 0 {
            "unavailable"
        } else {
            "rejected"
        };
        h.insert("x-riverbed-reason".into(), text(reason));
    }
    broker.publish(&dlq_name, sent).await;
    let ids = |lines: Vec<serde_json::Value>| -> Vec<String> {
        lines
            .iter()
            .map(|l| l["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let first = ids(json_lines(&dlq(&["list", f])));
    let expected: Vec<String> = (0..12).map(|i| format!("L{i}")).collect();
    assert_eq!(first, expected);
    assert_eq!(
        ids(json_lines(&dlq(&["list", f]))),
        expected,
        "listed again, same order"
    );
    let summary: serde_json::Value =
        serde_json::from_str(&dlq(&["redrive", f, "--filter", "reason=unavailable"])).unwrap();
    assert_eq!(summary["redriven"], 4, "{summary}");
    let left: Vec<String> = (0..12)
        .filter(|i| i % 3 != 0)
        .map(|i| format!("L{i}"))
        .collect();
    assert_eq!(
        ids(json_lines(&dlq(&["list", f]))),
        left,
        "the others, in order"
    );
    assert_eq!(broker.depth(&queue).await, 4);
    broker.delete(&[&queue, &dlq_name]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_redrive_of_a_partitioned_pipeline_routes_by_key_again() {
    if !require_service("RabbitMQ", "127.0.0.1:5672") {
        return;
    }
    let _lock = lock_service("rabbitmq", false).await;
    let queue = unique("dlq_parts");
    let dlq_name = format!("{queue}.dlq");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("partitioned.toml");
    std::fs::write(
        &file,
        format!(
            "[pipeline]\nkey = \"routing_key\"\n[cluster]\nmode = \"partitioned\"\npartitions = 3\n\
             [source]\nkind = \"amqp\"\nurls = [\"{AMQP_URL}\"]\nqueue = \"{queue}\"\n\
             [[sinks]]\nname = \"out\"\nkind = \"noop\"\n"
        ),
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let broker = Broker::connect().await;
    assert!(riverbed(&["declare", f]).status.success());
    let mut sent = letters(60);
    for (i, (_, _, h)) in sent.iter_mut().enumerate() {
        h.insert("x-riverbed-original-exchange".into(), text(&queue));
        h.insert(
            "x-riverbed-original-subject".into(),
            text(&format!("e{}", i % 6)),
        );
    }
    broker.publish(&dlq_name, sent).await;

    let summary: serde_json::Value = serde_json::from_str(&dlq(&["redrive", f])).unwrap();
    assert_eq!(summary["redriven"], 60, "{summary}");
    assert_eq!(summary["to"], format!("exchange `{queue}`"));
    // Every key lands in one partition queue, as when it was first published.
    let mut home: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut total = 0;
    for p in 0..3 {
        for (id, (n, h)) in broker.drain(&format!("{queue}.{p}")).await {
            total += n;
            assert!(h.contains_key("x-riverbed-redriven"), "{h:?}");
            let key = format!("e{}", id[1..].parse::<usize>().unwrap() % 6);
            home.entry(key).or_default().push(p);
        }
    }
    assert_eq!(total, 60);
    assert_eq!(home.len(), 6);
    assert!(
        home.values().all(|ps| ps.iter().all(|p| *p == ps[0])),
        "{home:?}"
    );
    assert_eq!(broker.depth(&dlq_name).await, 0);
    let parts: Vec<String> = (0..3).map(|p| format!("{queue}.{p}")).collect();
    let mut names: Vec<&str> = parts.iter().map(String::as_str).collect();
    names.push(&dlq_name);
    broker.delete(&names).await;
    let _ = broker
        .ch
        .exchange_delete(queue.as_str().into(), Default::default())
        .await;
}
