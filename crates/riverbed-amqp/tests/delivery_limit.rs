//! Poison-pill protection on RabbitMQ: deliveries of a message are counted across crashes
//! (`x-delivery-count` on quorum queues); one delivered more than `max_deliveries` times is
//! dead-lettered as `delivery_limit`. A quorum queue Riverbed creates carries a delivery limit
//! a bit above that, with a dead-letter target, so the broker never drops a message silently.

mod common;

use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use common::{Raw, Recorder, available, broker, source_config, spawn_pipeline, unique};
use lapin::options::{BasicGetOptions, BasicRejectOptions};
use lapin::types::{AMQPValue, FieldTable};
use riverbed_amqp::AmqpSource;
use riverbed_core::Pipeline;

const LIMIT: Duration = Duration::from_secs(30);

/// Takes the next message of `queue` and gives it back unsettled, as a consumer that crashes
/// while handling it; returns its `x-delivery-count`.
async fn deliver_and_crash(raw: &Raw, queue: &str) -> Option<i64> {
    let ch = raw.connection.create_channel().await.unwrap();
    let got = ch
        .basic_get(queue.into(), BasicGetOptions { no_ack: false })
        .await
        .unwrap()?;
    let count = got.delivery.properties.headers().as_ref().and_then(|h| {
        match h.inner().get("x-delivery-count") {
            Some(AMQPValue::LongInt(n)) => Some(i64::from(*n)),
            Some(AMQPValue::LongLongInt(n)) => Some(*n),
            _ => None,
        }
    });
    ch.basic_reject(
        got.delivery.delivery_tag,
        BasicRejectOptions { requeue: true },
    )
    .await
    .unwrap();
    Some(count.unwrap_or(0))
}

fn header_text(m: &lapin::message::BasicGetMessage, name: &str) -> String {
    let headers = m.delivery.properties.headers().clone().unwrap_or_default();
    match headers.inner().get(name) {
        Some(AMQPValue::LongString(s)) => s.to_string(),
        other => panic!("header {name}: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_redelivered_past_max_deliveries_is_dead_lettered_as_delivery_limit() {
    if !available() {
        return;
    }
    let _shared = broker(false).await;
    common::bounded(async {
        let queue = unique("poison");
        let _cleanup = common::DeleteOnPanic(queue.clone());
        let config = source_config(&queue, "queue_type = \"quorum\"");
        AmqpSource::new(config.clone())
            .unwrap()
            .declare()
            .await
            .unwrap();
        let raw = Raw::connect().await;
        raw.publish("", &queue, "poison", r#"{"k":"p"}"#.into())
            .await;
        raw.publish("", &queue, "healthy", r#"{"k":"h"}"#.into())
            .await;
        raw.channel.wait_for_confirms().await.unwrap();
        // Three runs take the poison message and crash before settling it.
        for _ in 0..3 {
            deliver_and_crash(&raw, &queue)
                .await
                .expect("poison is there");
        }
        let sink = Recorder::new();
        let committed = sink.committed.clone();
        let pipeline = Pipeline::builder()
            .source(AmqpSource::new(config).unwrap())
            .partitions(NonZeroUsize::new(1).unwrap())
            .max_deliveries(NonZeroU32::new(3).unwrap())
            .sink("recorder", sink)
            .build()
            .unwrap();
        let stats = pipeline.stats();
        let (stop, run) = spawn_pipeline(pipeline);
        let s = stats.clone();
        common::wait_until("both settled", LIMIT, || {
            let n = s.snapshot();
            n.acked + n.dead_lettered == 2
        })
        .await;
        let _ = stop.send(());
        let report = run.await.unwrap();
        assert_eq!((report.stats.acked, report.stats.dead_lettered), (1, 1));
        let ids: Vec<String> = committed
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.id.clone())
            .collect();
        assert_eq!(
            ids,
            ["healthy"],
            "the poison message is not processed a fourth time"
        );
        let dlq = format!("{queue}.dlq");
        let letter = raw.get(&dlq).await.expect("poison is dead-lettered");
        assert_eq!(header_text(&letter, "x-riverbed-reason"), "delivery_limit");
        assert_eq!(
            letter
                .delivery
                .properties
                .message_id()
                .as_ref()
                .unwrap()
                .as_str(),
            "poison"
        );
        raw.delete(&[queue.clone(), dlq]).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_queue_riverbed_creates_dead_letters_past_its_delivery_limit() {
    if !available() {
        return;
    }
    let _shared = broker(false).await;
    common::bounded(async {
        let queue = unique("limited");
        let _cleanup = common::DeleteOnPanic(queue.clone());
        let source = AmqpSource::new(source_config(&queue, "queue_type = \"quorum\""))
            .unwrap()
            .max_deliveries(2);
        source.declare().await.unwrap();
        let raw = Raw::connect().await;
        raw.publish("", &queue, "stuck", "{}".into()).await;
        raw.channel.wait_for_confirms().await.unwrap();
        // Past the limit (a bit above max_deliveries) the broker dead-letters it, not drops it.
        // A quorum queue dead-letters asynchronously, and a requeued message can be briefly
        // invisible to basic.get, so an empty get is not yet the end: the dead-letter queue is
        // polled until the letter is there (bounded).
        let dlq = format!("{queue}.dlq");
        let mut returns = 0;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let letter = loop {
            if let Some(letter) = raw.get(&dlq).await {
                break letter;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the broker dead-lettered nothing after {returns} returns"
            );
            if deliver_and_crash(&raw, &queue).await.is_some() {
                returns += 1;
                assert!(returns <= 50, "the broker enforces no delivery limit");
            } else {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        };
        assert!(
            returns > 2,
            "the broker's limit lies above max_deliveries: {returns}"
        );
        assert_eq!(
            letter
                .delivery
                .properties
                .message_id()
                .as_ref()
                .unwrap()
                .as_str(),
            "stuck"
        );
        raw.delete(&[queue.clone(), dlq]).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_quorum_queue_without_a_limit_is_consumed_as_it_is() {
    if !available() {
        return;
    }
    let _shared = broker(false).await;
    common::bounded(async {
        let queue = unique("preexisting");
        let _cleanup = common::DeleteOnPanic(queue.clone());
        let raw = Raw::connect().await;
        let mut args = FieldTable::default();
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        raw.declare(&queue, args).await;
        raw.publish("", &queue, "m0", "{}".into()).await;
        raw.channel.wait_for_confirms().await.unwrap();
        let sink = Recorder::new();
        let committed = sink.committed.clone();
        let source = AmqpSource::new(source_config(&queue, "queue_type = \"quorum\"")).unwrap();
        source
            .declare()
            .await
            .expect("an existing queue keeps its arguments");
        let pipeline = Pipeline::builder()
            .source(source)
            .sink("recorder", sink)
            .build()
            .unwrap();
        let (stop, run) = spawn_pipeline(pipeline);
        let c = committed.clone();
        common::wait_until("m0 committed", LIMIT, || c.lock().unwrap().len() == 1).await;
        let _ = stop.send(());
        assert!(run.await.unwrap().drained);
        raw.delete(&[queue.clone(), format!("{queue}.dlq")]).await;
    })
    .await;
}
