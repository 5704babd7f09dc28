//! The source's own topology against the broker: topic and headers exchanges, bound by the
//! source's configuration, route exactly what their bindings match into its queue.

mod common;

use std::collections::BTreeSet;
use std::num::NonZeroUsize;
use std::time::Duration;

use common::{Raw, Recorder, available, broker, committed_ids, source_config, spawn_pipeline};
use lapin::types::{AMQPValue, FieldTable};
use riverbed_amqp::AmqpSource;
use riverbed_core::Pipeline;

const LIMIT: Duration = Duration::from_secs(60);

/// Declares the source's topology ahead, lets `publish` send messages, consumes them in order
/// (one partition) until `last` is committed, and returns the committed ids and subjects.
async fn routed(
    name: &str,
    topology: String,
    publish: impl AsyncFnOnce(&Raw, &str),
    last: &str,
) -> Vec<(String, Option<String>)> {
    let queue = common::unique(name);
    let exchange = format!("{queue}.x");
    let _cleanup = common::DeleteOnPanic(queue.clone());
    let config = source_config(&queue, &topology.replace("{exchange}", &exchange));
    AmqpSource::new(config.clone())
        .unwrap()
        .declare()
        .await
        .unwrap();
    let raw = Raw::connect().await;
    publish(&raw, &exchange).await;
    raw.channel.wait_for_confirms().await.unwrap();

    let sink = Recorder::new();
    let committed = sink.committed.clone();
    let pipeline = Pipeline::builder()
        .source(AmqpSource::new(config).unwrap())
        .partitions(NonZeroUsize::new(1).unwrap())
        .sink("recorder", sink)
        .build()
        .unwrap();
    let (stop, run) = spawn_pipeline(pipeline);
    // One partition commits in delivery order: once the last message published is committed,
    // everything the queue received before it is too.
    let c = committed.clone();
    common::wait_until("the last matching message", LIMIT, || {
        committed_ids(&c).iter().any(|id| id == last)
    })
    .await;
    let _ = stop.send(());
    assert!(run.await.unwrap().drained);
    assert_eq!(raw.ready(&queue).await, 0, "nothing else in the queue");
    raw.delete(&[queue.clone(), format!("{queue}.dlq")]).await;
    let ch = raw.connection.create_channel().await.unwrap();
    ch.exchange_delete(exchange.as_str().into(), Default::default())
        .await
        .unwrap();
    let seen = committed.lock().unwrap().clone();
    seen.into_iter().map(|s| (s.id, s.subject)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_exchange_routes_what_the_binding_patterns_match() {
    if !available() {
        return;
    }
    let _shared = broker(false).await;
    common::bounded(async {
        let topology = "exchanges = [{ name = \"{exchange}\", kind = \"topic\" }]\n\
             bindings = [\n\
               { exchange = \"{exchange}\", routing_key = \"order.*.eu\" },\n\
               { exchange = \"{exchange}\", routing_key = \"audit.#\" },\n\
             ]";
        let keys = [
            ("order.created.eu", true),
            ("order.created.us", false),
            ("order.eu", false),
            ("order.created.eu.extra", false),
            ("audit", true),
            ("audit.login.failed", true),
            ("other", false),
            ("order.paid.eu", true),
        ];
        let seen = routed(
            "topic",
            topology.into(),
            async |raw: &Raw, exchange: &str| {
                for (key, _) in keys {
                    raw.publish(exchange, key, key, "{}".into()).await;
                }
            },
            "order.paid.eu",
        )
        .await;
        let expected: Vec<(String, Option<String>)> = keys
            .iter()
            .filter(|(_, matches)| *matches)
            .map(|(k, _)| (k.to_string(), Some(k.to_string())))
            .collect();
        assert_eq!(seen, expected, "exactly the matching keys, in order, once");
    })
    .await;
}

fn headers(pairs: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert((*k).into(), v.clone());
    }
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_headers_exchange_routes_what_the_binding_arguments_match() {
    if !available() {
        return;
    }
    let _shared = broker(false).await;
    common::bounded(async {
        let topology = "exchanges = [{ name = \"{exchange}\", kind = \"headers\" }]\n\
             bindings = [\n\
               { exchange = \"{exchange}\", arguments = { \"x-match\" = \"all\", region = \"eu\", kind = \"order\" } },\n\
               { exchange = \"{exchange}\", arguments = { \"x-match\" = \"any\", priority = \"high\", vip = true } },\n\
             ]";
        let s = |v: &str| AMQPValue::LongString(v.into());
        let messages = vec![
            ("eu-order", headers(&[("region", s("eu")), ("kind", s("order"))]), true),
            ("eu-only", headers(&[("region", s("eu"))]), false),
            ("us-order", headers(&[("region", s("us")), ("kind", s("order"))]), false),
            ("high", headers(&[("priority", s("high"))]), true),
            ("vip", headers(&[("vip", AMQPValue::Boolean(true))]), true),
            ("not-vip", headers(&[("vip", AMQPValue::Boolean(false))]), false),
            ("bare", FieldTable::default(), false),
            (
                "last",
                headers(&[("region", s("eu")), ("kind", s("order")), ("x", s("y"))]),
                true,
            ),
        ];
        let expected: BTreeSet<String> = messages
            .iter()
            .filter(|(_, _, matches)| *matches)
            .map(|(id, _, _)| id.to_string())
            .collect();
        let to_publish = messages.clone();
        let seen = routed(
            "headers",
            topology.into(),
            async move |raw: &Raw, exchange: &str| {
                for (id, h, _) in to_publish {
                    raw.publish_with_headers(exchange, "", id, "{}".into(), h).await;
                }
            },
            "last",
        )
        .await;
        let ids: Vec<String> = seen.into_iter().map(|(id, _)| id).collect();
        assert_eq!(ids.len(), expected.len(), "each once: {ids:?}");
        assert_eq!(ids.into_iter().collect::<BTreeSet<_>>(), expected);
    })
    .await;
}
