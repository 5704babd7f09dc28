//! The test's side of a control queue: a command published with `reply_to` (an exclusive
//! queue of the test's) and a correlation id, and its answer awaited.

use std::time::Duration;

use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, Consumer};
use serde_json::Value;

/// Sends commands and reads their answers, one at a time.
pub struct Asker {
    channel: Channel,
    replies: ShortString,
    answers: Consumer,
}

impl Asker {
    /// Opens a channel on `conn` with a reply queue of its own.
    pub async fn open(conn: &Connection) -> Asker {
        let channel = conn.create_channel().await.unwrap();
        let exclusive = QueueDeclareOptions {
            exclusive: true,
            auto_delete: true,
            ..Default::default()
        };
        let replies = channel
            .queue_declare("".into(), exclusive, FieldTable::default())
            .await
            .unwrap()
            .name()
            .clone();
        let no_ack = BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        };
        let answers = channel
            .basic_consume(
                replies.clone(),
                "answers".into(),
                no_ack,
                FieldTable::default(),
            )
            .await
            .unwrap();
        Asker {
            channel,
            replies,
            answers,
        }
    }

    /// Publishes `body` to the control queue `queue` and returns the answer, which must carry
    /// `id` as its correlation id and come within `limit`.
    pub async fn ask(&mut self, queue: &str, body: &str, id: &str, limit: Duration) -> Value {
        let props = BasicProperties::default()
            .with_reply_to(self.replies.clone())
            .with_correlation_id(id.into());
        self.channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                props,
            )
            .await
            .unwrap();
        let d = tokio::time::timeout(limit, self.answers.next())
            .await
            .expect("an answer on reply_to in time")
            .unwrap()
            .unwrap();
        let correlation = d.properties.correlation_id().as_ref().map(|c| c.as_str());
        assert_eq!(correlation, Some(id), "the answer carries the command's id");
        serde_json::from_slice(&d.data).unwrap()
    }
}
