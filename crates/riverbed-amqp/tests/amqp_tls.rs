//! RabbitMQ over TLS (`amqps://`), against a second RabbitMQ node of its own
//! (`riverbed-tls@localhost`, TLS listener on 55671, data in a temp dir) that the test starts
//! with certificates it generates; the shared node on 5672 is not touched. The sink publishes
//! and a pipeline consumes over verified connections with a client certificate, and a broker
//! signed by another CA is refused with a clear error.

mod common;

use std::time::Duration;

use common::{Recorder, run_until};
use riverbed_amqp::{AmqpSink, AmqpSinkConfig, AmqpSource, AmqpSourceConfig};
use riverbed_core::testing::{Pki, rabbitmq_tls};
use riverbed_core::{BatchOutcome, Message, Pipeline, Sink};

const PORT: u16 = 55671;
const URL: &str = "amqps://guest:guest@localhost:55671/%2f";
const QUEUE: &str = "riverbed-tls-orders";

fn tls(ca: &std::path::Path, pki: &Pki) -> String {
    format!(
        "[tls]\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        ca.display(),
        pki.client_cert.display(),
        pki.client_key.display()
    )
}

fn source(tls: &str) -> AmqpSourceConfig {
    toml::from_str(&format!(
        "urls = [\"{URL}\"]\nqueue = \"{QUEUE}\"\nconnect_timeout = \"10s\"\n{tls}"
    ))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqps_sink_and_source_work_over_verified_tls_and_a_wrong_ca_is_refused() {
    let pki = Pki::generate();
    let Some(_node) = rabbitmq_tls(&pki, PORT) else {
        return;
    };
    common::bounded(async {
        let trusted = tls(&pki.ca, &pki);
        let declared = AmqpSource::new(source(&trusted)).unwrap().declare().await;
        assert_eq!(declared.unwrap(), QUEUE);

        let sink_config: AmqpSinkConfig = toml::from_str(&format!(
            "urls = [\"{URL}\"]\nrouting_key = \"{QUEUE}\"\n{trusted}"
        ))
        .unwrap();
        let sink = AmqpSink::new(sink_config).unwrap();
        let batch: Vec<Message> = (0..20)
            .map(|i| {
                let mut m = Message::new(format!("order {i}")).with_key(format!("k{}", i % 3));
                m.meta.message_id = Some(format!("o{i}"));
                m
            })
            .collect();
        assert_eq!(sink.write(&batch).await, BatchOutcome::Committed);

        let recorder = Recorder::new();
        let committed = recorder.committed.clone();
        let pipeline = Pipeline::builder()
            .source(AmqpSource::new(source(&trusted)).unwrap())
            .sink("recorder", recorder)
            .build()
            .unwrap();
        let seen = committed.clone();
        let report = run_until(pipeline, "20 messages over TLS", move || {
            seen.lock().unwrap().len() >= 20
        })
        .await;
        let mut ids = common::committed_ids(&committed);
        ids.sort_by_key(|id| id[1..].parse::<u32>().unwrap());
        let want: Vec<String> = (0..20).map(|i| format!("o{i}")).collect();
        assert_eq!(ids, want, "{report:?}");

        // The broker requires a client certificate: without it the connection is refused.
        let anonymous = source(&format!("[tls]\nca_file = \"{}\"\n", pki.ca.display()));
        let refused = AmqpSource::new(anonymous).unwrap().declare().await;
        assert!(refused.is_err(), "a client certificate is required");

        let wrong = source(&tls(&pki.wrong_ca, &pki));
        let err = tokio::time::timeout(
            Duration::from_secs(30),
            AmqpSource::new(wrong).unwrap().declare(),
        )
        .await
        .expect("the refusal comes within the connect timeout")
        .expect_err("a certificate from an unknown CA is refused")
        .to_string();
        eprintln!("refused as it should be: {err}");
        assert!(err.contains("UnknownIssuer"), "{err}");
        assert!(!err.contains("guest:guest"), "{err}");

        // A pipeline whose broker cannot be verified does not start: it ends with the error
        // instead of retrying a configuration that will never work.
        let pipeline = Pipeline::builder()
            .source(AmqpSource::new(source(&tls(&pki.wrong_ca, &pki))).unwrap())
            .sink("recorder", Recorder::new())
            .build()
            .unwrap();
        let err = tokio::time::timeout(common::LIMIT, pipeline.run(std::future::pending()))
            .await
            .expect("a refused certificate ends the run")
            .expect_err("the source cannot start")
            .to_string();
        assert!(err.contains("UnknownIssuer"), "{err}");
    })
    .await;
}

#[test]
fn amqp_tls_options_need_an_amqps_url() {
    let config: AmqpSourceConfig = toml::from_str(
        "urls = [\"amqp://127.0.0.1:5672\"]\nqueue = \"q\"\n[tls]\nca_file = \"/x.pem\"\n",
    )
    .unwrap();
    let e = AmqpSource::new(config).err().expect("refused").to_string();
    assert!(e.contains("applies to amqps:// urls only"), "{e}");
}
