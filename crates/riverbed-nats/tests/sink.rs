//! The publishing sink against the real server: publish acks awaited, `Nats-Msg-Id` from the
//! message id (a retried batch is dropped as duplicates), headers kept, subject templates.

mod common;

use common::{DeleteStreams, Raw, URL, available, server};
use riverbed_core::{BatchOutcome, Message, Outcome, Sink};
use riverbed_nats::{NatsSink, NatsSinkConfig};

fn sink(subject: &str) -> NatsSink {
    let text = format!("servers = [\"{URL}\"]\nsubject = \"{subject}\"\npublish_timeout = \"5s\"");
    NatsSink::new(toml::from_str::<NatsSinkConfig>(&text).unwrap()).unwrap()
}

fn message(key: &str, id: &str) -> Message {
    let mut m = Message::new(format!("{{\"id\":\"{id}\"}}"))
        .with_key(key)
        .with_header("x-tenant", "acme")
        .with_header("Nats-Expected-Stream", "ELSEWHERE");
    m.meta.message_id = Some(id.to_owned());
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_sink_publishes_with_message_ids_headers_and_templated_subjects() {
    if !available() {
        return;
    }
    let _shared = server(false).await;
    common::bounded(async {
        let stream = common::unique("sink");
        let _cleanup = DeleteStreams(vec![stream.clone()]);
        let raw = Raw::connect().await;
        raw.create_stream(&stream, &[&format!("{stream}.>")]).await;
        let out = sink(&format!("{stream}.{{key}}"));
        out.connect().await.expect("connects");

        let batch = vec![message("a", "m1"), message("b", "m2"), message("a", "m3")];
        assert_eq!(out.write(&batch).await, BatchOutcome::Committed);
        // The pipeline retries a batch whose acks it did not see: the ids make it harmless.
        assert_eq!(out.write(&batch).await, BatchOutcome::Committed);
        assert_eq!(raw.messages_in(&stream).await, 3, "duplicates dropped");

        let first = raw.message(&stream, 1).await;
        assert_eq!(first.subject.as_str(), format!("{stream}.a"));
        assert_eq!(first.payload.as_ref(), b"{\"id\":\"m1\"}");
        let h = |name: &str| first.headers.get(name).map(|v| v.as_str().to_owned());
        assert_eq!(h("Nats-Msg-Id").as_deref(), Some("m1"));
        assert_eq!(h("x-tenant").as_deref(), Some("acme"), "headers kept");
        assert_eq!(
            h("Nats-Expected-Stream"),
            None,
            "server directives are not copied"
        );
        assert_eq!(
            raw.message(&stream, 2).await.subject.as_str(),
            format!("{stream}.b")
        );

        // No stream captures the subject: retried, not dropped; a message without the key the
        // template needs is refused for good.
        let nowhere = sink("rbtest.nowhere.{key}");
        let BatchOutcome::Each(o) = nowhere
            .write(&[message("a", "x1"), Message::new("no key")])
            .await
        else {
            panic!("per-message outcomes expected")
        };
        assert!(
            matches!(&o[0], Outcome::Transient(f) if f.reason == "no_stream"),
            "{o:?}"
        );
        assert!(
            matches!(&o[1], Outcome::Permanent(f) if f.reason == "unpublishable"),
            "{o:?}"
        );
    })
    .await;
}
