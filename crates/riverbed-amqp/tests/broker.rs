//! The source against a real RabbitMQ on 127.0.0.1:5672: consuming through a pipeline with
//! coalesced acks, dead letters, broker retry, queues declared ahead, refused starts.

mod common;

use std::collections::BTreeSet;
use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use common::{
    LIMIT, Raw, Recorder, available, broker, queues_with_prefix, run_until, source_config, unique,
};
use lapin::types::{AMQPValue, FieldTable};
use riverbed_amqp::AmqpSource;
use riverbed_core::{Failure, KeySpec, Outcome, Pipeline, RetryMode, RetryPolicy};

fn nz(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumes_everything_with_coalesced_acks() {
    if !available() {
        return;
    }
    let _shared = broker(false).await;
    common::bounded(async {
        let queue = unique("consume");
        let _cleanup = common::DeleteOnPanic(queue.clone());
        let raw = Raw::connect().await;
        raw.declare(&queue, FieldTable::default()).await;
        const N: usize = 3000;
        raw.publish_range("", &queue, 0, N).await;

        let source = AmqpSource::new(source_config(&queue, "prefetch = 500")).unwrap();
        let status = source.status();
        let sink = Recorder::new();
        let committed = sink.committed.clone();
        let pipeline = Pipeline::builder()
            .source(source)
            .sink("recorder", sink)
            .build()
            .unwrap();
        let stats = pipeline.stats();
        let report = tokio::time::timeout(
            LIMIT,
            run_until(pipeline, "every message acked", move || {
                stats.snapshot().acked >= N as u64
            }),
        )
        .await
        .expect("test finishes in time");

        assert!(report.drained);
        let counts = Recorder::counts(&committed);
        assert_eq!(counts.len(), N, "every message committed");
        assert!(counts.values().all(|c| *c == 1), "no duplicates");
        assert_eq!(status.acked(), N as u64, "every delivery acknowledged");
        assert!(
            status.ack_frames() * 10 < N as u64,
            "acks are coalesced: {} frames for {N} messages",
            status.ack_frames()
        );
        assert_eq!(raw.ready(&queue).await, 0, "nothing left or requeued");
        raw.delete(&[queue.clone(), format!("{queue}.dlq")]).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_message_goes_to_the_dead_letter_queue_and_the_pipeline_goes_on() {
    if !available() {
        return;
    }
    let _shared = broker(false).await;
    common::bounded(async {
        let queue = unique("poison");
        let _cleanup = common::DeleteOnPanic(queue.clone());
        let dlq = format!("{queue}.dlq");
        let raw = Raw::connect().await;
        raw.declare(&queue, FieldTable::default()).await;
        raw.publish_range("", &queue, 0, 10).await;
        raw.publish("", &queue, "poison", "{not json".into()).await;
        raw.publish_range("", &queue, 10, 20).await;

        let source = AmqpSource::new(source_config(&queue, "")).unwrap();
        let sink = Recorder::new();
        let committed = sink.committed.clone();
        let pipeline = Pipeline::builder()
            .source(source)
            .key(KeySpec::JsonPointer("/id".into()))
            .sink("recorder", sink)
            .build()
            .unwrap();
        let stats = pipeline.stats();
        tokio::time::timeout(
            LIMIT,
            run_until(pipeline, "all settled", move || {
                let s = stats.snapshot();
                s.acked >= 20 && s.dead_lettered >= 1
            }),
        )
        .await
        .expect("test finishes in time");

        assert_eq!(Recorder::counts(&committed).len(), 20);
        let letter = raw.get(&dlq).await.expect("one dead letter");
        assert_eq!(letter.delivery.data, b"{not json");
        let headers = letter.delivery.properties.headers().clone().unwrap();
        let text = |name: &str| match headers.inner().get(name) {
            Some(AMQPValue::LongString(s)) => s.to_string(),
            other => panic!("header {name}: {other:?}"),
        };
        assert_eq!(text("x-riverbed-reason"), "malformed_payload");
        assert!(text("x-riverbed-error").contains("JSON"));
        assert_eq!(text("x-riverbed-original-subject"), queue);
        assert!(headers.contains_key("x-riverbed-first-failure-ms"));
        assert!(headers.contains_key("x-riverbed-attempts"));
        assert_eq!(
            letter
                .delivery
                .properties
                .message_id()
                .as_ref()
                .map(|m| m.as_str()),
            Some("poison")
        );
        assert!(raw.get(&dlq).await.is_none(), "exactly one letter");
        assert_eq!(raw.ready(&queue).await, 0);
        raw.delete(&[queue, dlq]).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_retry_comes_back_with_increasing_attempts_then_dead_letters() {
    broker_retry(false).await;
}

/// On a quorum queue the broker counts deliveries too (`x-delivery-count`); a message that went
/// through the retry queues must still count each attempt once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_retry_from_a_quorum_queue_counts_each_attempt_once() {
    broker_retry(true).await;
}

async fn broker_retry(quorum: bool) {
    if !available() {
        return;
    }
    let _shared = broker(false).await;
    common::bounded(async {
        let queue = unique("retry");
        let _cleanup = common::DeleteOnPanic(queue.clone());
        let dlq = format!("{queue}.dlq");
        let raw = Raw::connect().await;
        let mut args = FieldTable::default();
        let mut extra = "";
        if quorum {
            args.insert(
                "x-queue-type".into(),
                AMQPValue::LongString("quorum".into()),
            );
            extra = "queue_type = \"quorum\"";
        }
        raw.declare(&queue, args).await;
        raw.publish_range("", &queue, 0, 5).await;
        raw.publish("", &queue, "flaky", "{}".into()).await;
        raw.publish("", &queue, "doomed", "{}".into()).await;

        let source = AmqpSource::new(source_config(&queue, extra)).unwrap();
        // `flaky` fails on its first two attempts, `doomed` on every attempt.
        let sink = Recorder::failing(|m| match m.meta.message_id.as_deref() {
            Some("flaky") if m.meta.attempt < 3 => {
                Outcome::Transient(Failure::unavailable("flaky"))
            }
            Some("doomed") => Outcome::Transient(Failure::unavailable("always down")),
            _ => Outcome::Ok,
        });
        let (committed, written) = (sink.committed.clone(), sink.written.clone());
        let pipeline = Pipeline::builder()
            .source(source)
            .partitions(nz(1))
            .retry(RetryPolicy {
                max_attempts: NonZeroU32::new(3).unwrap(),
                initial_backoff: Duration::from_millis(50),
                max_backoff: Duration::from_millis(200),
                mode: RetryMode::Broker,
            })
            .sink("recorder", sink)
            .build()
            .unwrap();
        let stats = pipeline.stats();
        tokio::time::timeout(
            LIMIT,
            run_until(
                pipeline,
                "flaky committed and doomed dead-lettered",
                move || {
                    let s = stats.snapshot();
                    s.acked >= 6 && s.dead_lettered >= 1
                },
            ),
        )
        .await
        .expect("test finishes in time");

        let attempts = |id: &str| -> Vec<u32> {
            written
                .lock()
                .unwrap()
                .iter()
                .filter(|s| s.id == id)
                .map(|s| s.attempt)
                .collect()
        };
        assert_eq!(attempts("flaky"), vec![1, 2, 3], "attempt header grows");
        assert_eq!(attempts("doomed"), vec![1, 2, 3], "at most max_attempts");
        let counts = Recorder::counts(&committed);
        assert_eq!(counts.get("flaky"), Some(&1));
        assert_eq!(counts.len(), 6);
        let letter = raw.get(&dlq).await.expect("doomed is dead-lettered");
        assert_eq!(
            letter
                .delivery
                .properties
                .message_id()
                .as_ref()
                .map(|m| m.as_str()),
            Some("doomed")
        );
        let headers = letter.delivery.properties.headers().clone().unwrap();
        assert_eq!(
            headers.inner().get("x-riverbed-reason"),
            Some(&AMQPValue::LongString("retries_exhausted".into()))
        );
        assert_eq!(
            headers.inner().get("x-riverbed-attempts"),
            Some(&AMQPValue::LongLongInt(3))
        );
        let mut all = queues_with_prefix(&format!("{queue}.retry."));
        assert!(!all.is_empty(), "retry queues were used");
        for q in &all {
            assert_eq!(raw.ready(q).await, 0, "{q} drained");
        }
        all.extend([queue, dlq]);
        raw.delete(&all).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_declared_ahead_keeps_what_is_published_before_its_consumer_runs() {
    if !available() {
        return;
    }
    let _shared = broker(false).await;
    common::bounded(async {
        let queue = unique("ahead");
        let exchange = format!("{queue}.x");
        let _cleanup = common::DeleteOnPanic(queue.clone());
        let config = source_config(
            &queue,
            &format!(
                "exchanges = [{{ name = \"{exchange}\", kind = \"fanout\" }}]\n\
                 bindings = [{{ exchange = \"{exchange}\" }}]"
            ),
        );
        let declared = AmqpSource::new(config.clone()).unwrap().declare().await;
        assert_eq!(declared.unwrap(), queue);
        let raw = Raw::connect().await;
        assert_eq!(
            raw.ready(&format!("{queue}.dlq")).await,
            0,
            "dead letters declared"
        );
        // Nobody consumes yet: the binding routes the messages into the waiting queue.
        raw.publish_range(&exchange, "", 0, 5).await;
        assert_eq!(raw.ready(&queue).await, 5);

        let sink = Recorder::new();
        let committed = sink.committed.clone();
        let pipeline = Pipeline::builder()
            .source(AmqpSource::new(config).unwrap())
            .sink("recorder", sink)
            .build()
            .unwrap();
        let stats = pipeline.stats();
        run_until(pipeline, "the waiting messages acked", move || {
            stats.snapshot().acked >= 5
        })
        .await;
        let ids: BTreeSet<String> = committed
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.id.clone())
            .collect();
        assert_eq!(ids, (0..5).map(|i| format!("m{i}")).collect());
        raw.delete(&[queue.clone(), format!("{queue}.dlq")]).await;
        let ch = raw.connection.create_channel().await.unwrap();
        ch.exchange_delete(exchange.as_str().into(), Default::default())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_bad_credentials_and_mismatched_queues_at_start() {
    if !available() {
        return;
    }
    let _shared = broker(false).await;
    common::bounded(async {
        let queue = unique("refused");
        let _cleanup = common::DeleteOnPanic(queue.clone());
        let raw = Raw::connect().await;
        raw.declare(&queue, FieldTable::default()).await;
        let start = |config| async move {
            let pipeline = Pipeline::builder()
                .source(AmqpSource::new(config).unwrap())
                .sink("recorder", Recorder::new())
                .build()
                .unwrap();
            tokio::time::timeout(LIMIT, pipeline.run(std::future::pending()))
                .await
                .expect("a fatal error ends the run")
                .expect_err("the source cannot start")
                .to_string()
        };
        let wrong_password: riverbed_amqp::AmqpSourceConfig = toml::from_str(&format!(
            "urls = [\"amqp://guest:not-the-password@127.0.0.1:5672/%2f\"]\nqueue = \"{queue}\""
        ))
        .unwrap();
        let err = start(wrong_password).await;
        assert!(!err.contains("not-the-password"), "{err}");
        // The queue exists as a classic queue: declaring it as a quorum queue cannot work.
        let err = start(source_config(&queue, "queue_type = \"quorum\"")).await;
        assert!(err.contains(&queue), "{err}");
        raw.delete(&[queue.clone(), format!("{queue}.dlq")]).await;
    })
    .await;
}
