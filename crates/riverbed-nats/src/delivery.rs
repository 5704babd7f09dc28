//! Turning a JetStream delivery into a Riverbed message with its metadata.

use std::time::SystemTime;

use async_nats::Subject;
use async_nats::jetstream;
use riverbed_core::{HeaderValue, Message, Metadata};

use crate::headers::{MSG_ID, from_nats};

/// The header carrying the consumer sequence of a delivery (left out when republished).
pub const CONSUMER_SEQUENCE_HEADER: &str = "Nats-Consumer-Sequence";

/// A delivery taken apart: the message, where to acknowledge it and its stream sequence.
pub(crate) struct Received {
    pub message: Message,
    pub reply: Subject,
    pub stream_sequence: u64,
}

/// Converts a delivery: the stream sequence is the position, the delivered count the attempt,
/// `Nats-Msg-Id` the message id, the publish time the timestamp, the stream the exchange.
/// `None` for a message without a JetStream reply subject (it cannot be acknowledged).
pub(crate) fn receive(m: jetstream::Message) -> Option<Received> {
    let info = m.info().ok()?;
    let stream_sequence = info.stream_sequence;
    let consumer_sequence = info.consumer_sequence;
    let delivered = u32::try_from(info.delivered.max(1)).unwrap_or(u32::MAX);
    let published = SystemTime::from(info.published);
    let stream = info.stream.to_owned();
    tracing::trace!(stream_sequence, consumer_sequence, delivered, "Delivery");
    let m = m.message;
    let reply = m.reply?;
    let mut headers = from_nats(m.headers.as_ref());
    let message_id = headers
        .get(MSG_ID)
        .and_then(HeaderValue::as_str)
        .map(str::to_owned);
    headers.insert(
        CONSUMER_SEQUENCE_HEADER.into(),
        HeaderValue::Int(i64::try_from(consumer_sequence).unwrap_or(i64::MAX)),
    );
    let mut message = Message::new(m.payload);
    message.headers = headers;
    message.meta = Metadata {
        message_id,
        redelivered: delivered > 1,
        attempt: delivered,
        deliveries: delivered,
        position: Some(stream_sequence),
        subject: Some(m.subject.to_string()),
        exchange: Some(stream),
        timestamp: Some(published),
        received_at: SystemTime::now(),
        ..Metadata::default()
    };
    Some(Received {
        message,
        reply,
        stream_sequence,
    })
}
