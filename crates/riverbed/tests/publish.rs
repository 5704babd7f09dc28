//! `riverbed publish`: JSON lines into a `partitioned` pipeline's consistent-hash exchange,
//! each confirmed, every entity's messages landing in one partition queue; a line that is not
//! JSON stops the command, naming the line.

#[path = "outages/arrivals.rs"]
mod arrivals;
#[path = "outages/broker.rs"]
mod broker;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use lapin::options::{BasicGetOptions, ExchangeDeleteOptions};
use riverbed_core::testing::{lock_service, require_service};

use broker::{AMQP_URL, Broker};

const PARTITIONS: usize = 3;

fn publish(config: &std::path::Path, file: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_riverbed"))
        .arg("publish")
        .arg(config)
        .arg(file)
        .args(["--key", "/entity", "--id", "/id"])
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_routes_every_entity_to_one_partition_with_confirms() {
    if !require_service("RabbitMQ", "127.0.0.1:5672") {
        return;
    }
    let _lock = lock_service("rabbitmq", false).await;
    let queue = format!("publish_q{}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pipeline.toml");
    std::fs::write(
        &config,
        format!(
            "[pipeline]\nkey = \"routing_key\"\n[cluster]\nmode = \"partitioned\"\npartitions = {PARTITIONS}\n\
             [source]\nkind = \"amqp\"\nurls = [\"{AMQP_URL}\"]\nqueue = \"{queue}\"\n\
             [[sinks]]\nname = \"out\"\nkind = \"noop\"\n"
        ),
    )
    .unwrap();
    arrivals::declare(&config);
    let lines: Vec<String> = (0..300)
        .map(|i| {
            serde_json::json!({"id": format!("m{i}"), "entity": format!("e{}", i % 20), "seq": i})
                .to_string()
        })
        .collect();
    let file = dir.path().join("events.ndjson");
    std::fs::write(&file, lines.join("\n")).unwrap();
    let out = publish(&config, &file);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["published"], 300, "{summary}");

    let broker = Broker::connect().await;
    let conn = lapin::Connection::connect(AMQP_URL, Default::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let mut home: BTreeMap<String, BTreeSet<usize>> = BTreeMap::new();
    let mut ids = BTreeSet::new();
    for p in 0..PARTITIONS {
        let q = format!("{queue}.{p}");
        while let Some(m) = ch
            .basic_get(q.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            let body: serde_json::Value = serde_json::from_slice(&m.delivery.data).unwrap();
            assert_eq!(
                m.delivery.routing_key.as_str(),
                body["entity"].as_str().unwrap()
            );
            let id = m.delivery.properties.message_id().clone().unwrap();
            assert_eq!(
                id.as_str(),
                body["id"].as_str().unwrap(),
                "the message id from --id"
            );
            ids.insert(id.to_string());
            home.entry(body["entity"].as_str().unwrap().to_owned())
                .or_default()
                .insert(p);
        }
    }
    assert_eq!(ids.len(), 300, "every line published once");
    assert!(
        home.values().all(|ps| ps.len() == 1),
        "one partition per entity: {home:?}"
    );
    let used: BTreeSet<usize> = home.values().flatten().copied().collect();
    assert!(
        used.len() > 1,
        "the keys spread over the partitions: {used:?}"
    );

    std::fs::write(&file, format!("{}\nnot json\n", lines[0])).unwrap();
    let out = publish(&config, &file);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("line 2 is not JSON"),
        "{stderr}"
    );

    let mut all: Vec<String> = (0..PARTITIONS).map(|p| format!("{queue}.{p}")).collect();
    all.push(format!("{queue}.dlq"));
    broker.delete(&all).await;
    let _ = ch
        .exchange_delete(queue.as_str().into(), ExchangeDeleteOptions::default())
        .await;
}
