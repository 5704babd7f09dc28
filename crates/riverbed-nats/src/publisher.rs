//! Publishing to JetStream and awaiting every publish ack: shared by the sink and the
//! dead-letter destination. Connects on first use; the client reconnects by itself.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::context::{PublishAckFuture, PublishError, PublishErrorKind};
use async_nats::jetstream::{self, message::PublishMessage, publish::PublishAck};
use bytes::Bytes;
use riverbed_core::Failure;
use tokio::sync::OnceCell;

use crate::connect::{capture, connect, context, ensure_stream};
use crate::error::Result;
use crate::settings::Connection;

/// One message to publish.
pub(crate) struct Outgoing {
    pub subject: String,
    pub headers: HeaderMap,
    pub payload: Bytes,
    pub message_id: Option<String>,
}

/// A stream a publisher makes sure of before its first publish.
pub(crate) struct Ensure {
    pub stream: String,
    /// Its subjects, if it has to be created.
    pub create_with: Vec<String>,
    /// A subject it must capture: added to an existing stream that does not.
    pub captures: String,
}

/// A lazily connected JetStream publisher.
pub(crate) struct Publisher {
    connection: Connection,
    timeout: Duration,
    ensure: Option<Ensure>,
    js: OnceCell<jetstream::Context>,
}

impl Publisher {
    /// A publisher whose acks may take `timeout`.
    pub fn new(connection: Connection, timeout: Duration, ensure: Option<Ensure>) -> Self {
        Publisher {
            connection,
            timeout,
            ensure,
            js: OnceCell::new(),
        }
    }

    /// Connects (and creates the stream it needs) now, if not done yet.
    pub async fn context(&self) -> Result<&jetstream::Context> {
        self.js
            .get_or_try_init(|| async {
                let client = connect(&self.connection).await?;
                let js = context(client, self.timeout);
                if let Some(e) = &self.ensure {
                    let stream = ensure_stream(&js, &e.stream, &e.create_with).await?;
                    capture(&js, stream, &e.captures).await?;
                }
                Ok(js)
            })
            .await
    }

    /// Publishes every message (pipelined), then waits for each ack; one result per message.
    pub async fn publish(
        &self,
        batch: Vec<Outgoing>,
    ) -> Result<Vec<Result<PublishAck, PublishError>>> {
        let js = self.context().await?;
        let mut pending: Vec<Result<PublishAckFuture, PublishError>> =
            Vec::with_capacity(batch.len());
        for o in batch {
            let mut m = PublishMessage::build()
                .payload(o.payload)
                .headers(o.headers);
            if let Some(id) = o.message_id {
                m = m.message_id(id);
            }
            pending.push(js.send_publish(o.subject, m).await);
        }
        let mut results = Vec::with_capacity(pending.len());
        for p in pending {
            results.push(match p {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            });
        }
        Ok(results)
    }
}

/// How a failed publish counts: retried, or refused for good.
pub(crate) fn classify(e: &PublishError) -> riverbed_core::Outcome {
    use riverbed_core::Outcome;
    match e.kind() {
        PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe => {
            Outcome::Transient(Failure::unavailable(format!("publish: {e}")))
        }
        // No stream captures the subject (or JetStream is not up yet after a restart).
        PublishErrorKind::StreamNotFound => Outcome::Transient(Failure::new(
            "no_stream",
            format!("publish: {e}: no stream captures the subject"),
        )),
        PublishErrorKind::MaxPayloadExceeded => {
            Outcome::Permanent(Failure::new("too_large", format!("publish: {e}")))
        }
        PublishErrorKind::WrongLastMessageId | PublishErrorKind::WrongLastSequence => {
            Outcome::Permanent(Failure::rejected(format!("publish: {e}")))
        }
        _ => Outcome::Transient(Failure::new("publish_failed", format!("publish: {e}"))),
    }
}
