//! The default dead-letter stream against the real server: `<stream>_dlq` captures the
//! default dead-letter subject of every durable of the stream, not only of the durable that
//! happened to create it.

mod common;

use common::{DeleteStreams, Raw, Recorder, available, run_until, server, source_config};
use riverbed_core::{Failure, Outcome, Pipeline};
use riverbed_nats::NatsSource;

/// A pipeline on durable `durable` of `stream` whose sink refuses `m4` for good.
fn refusing(stream: &str, durable: &str) -> Pipeline {
    let sink = Recorder::failing(|m| match m.meta.message_id.as_deref() {
        Some("m4") => Outcome::Permanent(Failure::rejected("bad row")),
        _ => Outcome::Ok,
    });
    Pipeline::builder()
        .source(NatsSource::new(source_config(stream, durable, "")).unwrap())
        .sink("rec", sink)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_two_durables_of_a_stream_share_its_default_dead_letter_stream() {
    if !available() {
        return;
    }
    let _shared = server(false).await;
    common::bounded(async {
        let stream = common::unique("dl_shared");
        let dlq = format!("{stream}_dlq");
        let _cleanup = DeleteStreams(vec![stream.clone(), dlq.clone()]);
        let raw = Raw::connect().await;
        raw.create_stream(&stream, &[&format!("{stream}.>")]).await;
        raw.publish_range(&stream, 0, 6, 3).await;

        // The first durable creates `<stream>_dlq`; the second must be able to use it too.
        for durable in ["billing", "reporting"] {
            let pipeline = refusing(&stream, durable);
            let stats = pipeline.stats();
            run_until(
                pipeline,
                "everything settled, m4 dead-lettered",
                move || {
                    let s = stats.snapshot();
                    s.acked == 5 && s.dead_lettered == 1
                },
            )
            .await;
        }
        assert_eq!(raw.messages_in(&dlq).await, 2, "one letter of each durable");
        for (seq, durable) in [(1, "billing"), (2, "reporting")] {
            let letter = raw.message(&dlq, seq).await;
            assert_eq!(
                letter.subject.as_str(),
                format!("riverbed.dlq.{stream}.{durable}")
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_a_dead_letter_stream_made_for_another_durable_gets_the_subject_added() {
    if !available() {
        return;
    }
    let _shared = server(false).await;
    common::bounded(async {
        let stream = common::unique("dl_added");
        let dlq = format!("{stream}_dlq");
        let _cleanup = DeleteStreams(vec![stream.clone(), dlq.clone()]);
        let raw = Raw::connect().await;
        raw.create_stream(&stream, &[&format!("{stream}.>")]).await;
        // As an earlier release made it: only the first durable's subject.
        raw.create_stream(&dlq, &[&format!("riverbed.dlq.{stream}.billing")])
            .await;
        raw.publish_range(&stream, 0, 6, 3).await;
        let pipeline = refusing(&stream, "reporting");
        let stats = pipeline.stats();
        run_until(
            pipeline,
            "everything settled, m4 dead-lettered",
            move || {
                let s = stats.snapshot();
                s.acked == 5 && s.dead_lettered == 1
            },
        )
        .await;
        assert_eq!(raw.messages_in(&dlq).await, 1);
        let letter = raw.message(&dlq, 1).await;
        assert_eq!(
            letter.subject.as_str(),
            format!("riverbed.dlq.{stream}.reporting")
        );
    })
    .await;
}
