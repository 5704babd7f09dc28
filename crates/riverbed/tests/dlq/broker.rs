//! The test's own RabbitMQ client: publishes letters, counts and drains queues.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

/// The shared broker.
pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}_{}_{nanos}", std::process::id())
}

pub struct Broker {
    _connection: Connection,
    pub ch: Channel,
}

impl Broker {
    pub async fn connect() -> Broker {
        let connection = Connection::connect(AMQP_URL, ConnectionProperties::default())
            .await
            .unwrap();
        let ch = connection.create_channel().await.unwrap();
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        Broker {
            _connection: connection,
            ch,
        }
    }

    /// Ready messages in `queue`.
    pub async fn depth(&self, queue: &str) -> u32 {
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        self.ch
            .queue_declare(queue.into(), passive, FieldTable::default())
            .await
            .unwrap()
            .message_count()
    }

    pub async fn wait_depth(&self, queue: &str, want: u32) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.depth(queue).await != want {
            assert!(Instant::now() < deadline, "`{queue}` never held {want}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Publishes `(message id, body, headers)` to `queue`, all confirmed.
    pub async fn publish(&self, queue: &str, messages: Vec<(String, Vec<u8>, FieldTable)>) {
        let mut confirms = Vec::new();
        for (id, body, headers) in messages {
            let props = BasicProperties::default()
                .with_delivery_mode(2)
                .with_message_id(id.as_str().into())
                .with_headers(headers);
            let options = BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            };
            confirms.push(
                self.ch
                    .basic_publish("".into(), queue.into(), options, &body, props)
                    .await
                    .unwrap(),
            );
        }
        for c in confirms {
            assert!(c.await.unwrap().is_ack());
        }
    }

    /// Takes every message of `queue`: message id -> (count, headers of the last one).
    pub async fn drain(&self, queue: &str) -> BTreeMap<String, (u32, FieldTable)> {
        let mut seen: BTreeMap<String, (u32, FieldTable)> = BTreeMap::new();
        while let Some(m) = self
            .ch
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            let p = &m.delivery.properties;
            let id = p.message_id().as_ref().map(|i| i.to_string()).unwrap();
            let e = seen.entry(id).or_insert((0, FieldTable::default()));
            e.0 += 1;
            e.1 = p.headers().clone().unwrap_or_default();
        }
        seen
    }

    pub async fn delete(&self, queues: &[&str]) {
        for q in queues {
            let _ = self
                .ch
                .queue_delete((*q).into(), QueueDeleteOptions::default())
                .await;
        }
    }
}

/// A text header value.
pub fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(s.into())
}

/// Letters as Riverbed's dead-letter queue stores them.
pub fn letters(n: usize) -> Vec<(String, Vec<u8>, FieldTable)> {
    (0..n)
        .map(|i| {
            let mut h = FieldTable::default();
            h.insert("x-riverbed-reason".into(), text("rejected"));
            h.insert("x-riverbed-error".into(), text("row refused"));
            h.insert("x-riverbed-attempts".into(), AMQPValue::LongLongInt(5));
            h.insert("x-riverbed-stage".into(), text("out"));
            (
                format!("L{i}"),
                format!("{{\"id\":\"k{i}\"}}").into_bytes(),
                h,
            )
        })
        .collect()
}
