//! The publishing sink against a real RabbitMQ on 127.0.0.1:5672: an unroutable message fails
//! loudly instead of vanishing; an alternate exchange catches what no binding routes.

mod common;

use common::{LIMIT, Raw, available, broker, unique};
use lapin::types::FieldTable;
use riverbed_amqp::{AmqpSink, AmqpSinkConfig};
use riverbed_core::{BatchOutcome, Message, Outcome, Sink};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unroutable_publish_fails_permanently_instead_of_vanishing() {
    if !available() {
        return;
    }
    let _shared = broker(false).await;
    common::bounded(async {
        let exchange = unique("orders");
        let bound = unique("orders-bound");
        let _cleanup = common::DeleteOnPanic(bound.clone());
        let config: AmqpSinkConfig = toml::from_str(&format!(
            r#"
            urls = ["{}"]
            exchange = "{exchange}"
            routing_key = "orders.{{key}}"
            [[exchanges]]
            name = "{exchange}"
            kind = "direct"
            durable = false
            auto_delete = true
            "#,
            common::URL
        ))
        .unwrap();
        let sink = AmqpSink::new(config).unwrap();
        let raw = Raw::connect().await;
        // Declares the exchange; then bind a queue for one key only.
        sink.connect().await.unwrap();
        let probe = Message::new("probe").with_key("nobody");
        let first = sink.write(&[probe]).await;
        assert!(matches!(first.get(0), Outcome::Permanent(_)), "{first:?}");
        raw.declare(&bound, FieldTable::default()).await;
        raw.bind(&bound, &exchange, "orders.a").await;

        let batch: Vec<Message> = ["a", "b", "a"]
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let mut m = Message::new(format!("{i}")).with_key(*k);
                m.meta.message_id = Some(format!("o{i}"));
                m
            })
            .collect();
        let outcome = sink.write(&batch).await;
        assert!(outcome.get(0).is_ok(), "{outcome:?}");
        assert!(outcome.get(2).is_ok(), "{outcome:?}");
        match outcome.get(1) {
            Outcome::Permanent(f) => {
                assert_eq!(f.reason, "unroutable");
                assert!(f.error.contains("orders.b"), "{f}");
            }
            other => panic!("an unroutable message must fail permanently, got {other:?}"),
        }
        common::wait_until_async("two routed messages", LIMIT, || async {
            raw.ready(&bound).await == 2
        })
        .await;
        let ok = sink.write(&batch[..1]).await;
        assert_eq!(ok, BatchOutcome::Committed);
        sink.close().await.unwrap();
        raw.delete(&[bound]).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alternate_exchange_catches_what_no_binding_routes() {
    if !available() {
        return;
    }
    let _shared = broker(false).await;
    common::bounded(async {
        let exchange = unique("ae-main");
        let caught = unique("ae-caught");
        let _cleanup = common::DeleteOnPanic(caught.clone());
        let config: AmqpSinkConfig = toml::from_str(&format!(
            r#"
            urls = ["{}"]
            exchange = "{exchange}"
            routing_key = "{{key}}"
            [[exchanges]]
            name = "{exchange}.unrouted"
            kind = "fanout"
            durable = false
            [[exchanges]]
            name = "{exchange}"
            kind = "direct"
            durable = false
            auto_delete = true
            alternate_exchange = "{exchange}.unrouted"
            "#,
            common::URL
        ))
        .unwrap();
        let sink = AmqpSink::new(config).unwrap();
        sink.connect().await.unwrap();
        let raw = Raw::connect().await;
        raw.declare(&caught, FieldTable::default()).await;
        raw.bind(&caught, &format!("{exchange}.unrouted"), "").await;
        let outcome = sink.write(&[Message::new("x").with_key("nobody")]).await;
        assert_eq!(
            outcome,
            BatchOutcome::Committed,
            "the alternate exchange routed it"
        );
        common::wait_until_async("the caught message", LIMIT, || async {
            raw.ready(&caught).await == 1
        })
        .await;
        sink.close().await.unwrap();
        raw.delete(&[caught]).await;
        for x in [exchange.clone(), format!("{exchange}.unrouted")] {
            raw.channel
                .exchange_delete(x.as_str().into(), Default::default())
                .await
                .unwrap();
        }
    })
    .await;
}
