//! The test's own RabbitMQ client: publishes keyed messages at a steady rate with confirms and
//! counts what waits in a queue.

// Shared by several test binaries; each uses a part of it.
#![allow(dead_code)]

use std::time::Duration;

use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};

/// The shared broker.
pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// A connection with a confirm channel.
pub struct Broker {
    connection: Connection,
    channel: Channel,
}

impl Broker {
    /// Connects.
    pub async fn connect() -> Broker {
        let connection = Connection::connect(AMQP_URL, ConnectionProperties::default())
            .await
            .expect("RabbitMQ connection");
        let channel = connection.create_channel().await.unwrap();
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        Broker {
            connection,
            channel,
        }
    }

    /// Publishes `bodies` (with their message ids) to `queue` at `per_second`, each confirmed.
    pub async fn publish_steadily(
        &self,
        queue: &str,
        bodies: Vec<(String, serde_json::Value)>,
        per_second: u64,
    ) {
        let direct = bodies
            .into_iter()
            .map(|(id, body)| (queue.to_owned(), id, body))
            .collect();
        self.publish_keyed("", direct, per_second).await;
    }

    /// Publishes `messages` (routing key, message id, body) to `exchange` at `per_second`,
    /// each persistent and confirmed before the next is sent.
    pub async fn publish_keyed(
        &self,
        exchange: &str,
        messages: Vec<(String, String, serde_json::Value)>,
        per_second: u64,
    ) {
        let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / per_second));
        for (routing_key, id, body) in messages {
            tick.tick().await;
            let props = BasicProperties::default()
                .with_delivery_mode(2)
                .with_message_id(id.as_str().into());
            let mandatory = BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            };
            let confirm = self
                .channel
                .basic_publish(
                    exchange.into(),
                    routing_key.as_str().into(),
                    mandatory,
                    &serde_json::to_vec(&body).unwrap(),
                    props,
                )
                .await
                .unwrap()
                .await
                .unwrap();
            assert!(
                matches!(confirm, Confirmation::Ack(None)),
                "{id} confirmed and routed: {confirm:?}"
            );
        }
    }

    /// Ready messages in `queue` (0 if it does not exist).
    pub async fn ready(&self, queue: &str) -> u32 {
        let ch = self.connection.create_channel().await.unwrap();
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        match ch
            .queue_declare(queue.into(), passive, FieldTable::default())
            .await
        {
            Ok(q) => q.message_count(),
            Err(_) => 0,
        }
    }

    /// Deletes `queues` (missing ones are fine).
    pub async fn delete(&self, queues: &[String]) {
        for q in queues {
            if let Ok(ch) = self.connection.create_channel().await {
                let _ = ch
                    .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                    .await;
            }
        }
    }
}

/// `n` events of `entities` entities, `{"id", "entity", "seq", "amount"}`, in the order a
/// producer would send them (each entity's `seq` growing).
pub fn events(n: u64, entities: u64) -> Vec<(String, serde_json::Value)> {
    (0..n)
        .map(|i| {
            let entity = format!("e{}", i % entities);
            let id = format!("{entity}-{i}");
            let body =
                serde_json::json!({"id": id, "entity": entity, "seq": i, "amount": 1 + i % 7});
            (id, body)
        })
        .collect()
}
