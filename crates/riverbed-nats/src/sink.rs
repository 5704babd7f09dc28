//! `NatsSink`: publishes to JetStream and waits for every publish ack, with `Nats-Msg-Id`
//! from the message id so the server's duplicate window drops a retried copy.

use async_trait::async_trait;
use riverbed_core::{BatchOutcome, Failure, Message, Outcome, Sink};

use crate::config::NatsSinkConfig;
use crate::error::Result;
use crate::headers::to_nats;
use crate::publisher::{Outgoing, Publisher, classify};
use crate::settings::SinkSettings;
use crate::subject::SubjectTemplate;

/// Publishes each batch in order (pipelined), then waits for every publish ack.
///
/// Per message: acknowledged by the stream (or dropped by it as a duplicate of the same
/// `Nats-Msg-Id`) → `Ok`; no stream captures the subject, a timeout, a lost connection →
/// `Transient` (retried; the message id makes the retry harmless); too large → `Permanent`.
/// Headers are kept, except those starting with `Nats-`, which the server acts on.
///
/// Like any pipelined publisher, a failed message may leave a later one of the same key
/// stored before its retry: consumers that need strict per-key order downstream dedupe and
/// order by their own version field.
pub struct NatsSink {
    subject: SubjectTemplate,
    publisher: Publisher,
}

impl NatsSink {
    /// Checks `config` and builds the sink; it connects on first write.
    pub fn new(config: NatsSinkConfig) -> Result<Self> {
        let SinkSettings {
            connection,
            subject,
            publish_timeout,
        } = SinkSettings::try_from(config)?;
        Ok(NatsSink {
            subject,
            publisher: Publisher::new(connection, publish_timeout, None),
        })
    }

    /// Connects now rather than on the first write, so an unreachable server shows at start.
    pub async fn connect(&self) -> Result<()> {
        self.publisher.context().await.map(|_| ())
    }

    fn outgoing(&self, m: &Message) -> Result<Outgoing, String> {
        Ok(Outgoing {
            subject: self.subject.render(m)?,
            headers: to_nats(&m.headers),
            payload: m.payload.clone(),
            message_id: m.meta.message_id.clone(),
        })
    }
}

#[async_trait]
impl Sink for NatsSink {
    async fn write(&self, batch: &[Message]) -> BatchOutcome {
        let mut outcomes = vec![Outcome::Ok; batch.len()];
        let mut outgoing = Vec::with_capacity(batch.len());
        let mut index = Vec::with_capacity(batch.len());
        for (i, m) in batch.iter().enumerate() {
            match self.outgoing(m) {
                Ok(o) => {
                    outgoing.push(o);
                    index.push(i);
                }
                Err(e) => outcomes[i] = Outcome::Permanent(Failure::new("unpublishable", e)),
            }
        }
        if !outgoing.is_empty() {
            let results = match self.publisher.publish(outgoing).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "Cannot publish to NATS");
                    return BatchOutcome::transient(Failure::unavailable(e.to_string()));
                }
            };
            for (i, r) in index.into_iter().zip(results) {
                match r {
                    Ok(ack) if ack.duplicate => {
                        metrics::counter!("riverbed_nats_publish_duplicates_total").increment(1);
                    }
                    Ok(_) => {}
                    Err(e) => outcomes[i] = classify(&e),
                }
            }
        }
        if outcomes.iter().all(Outcome::is_ok) {
            BatchOutcome::Committed
        } else {
            BatchOutcome::Each(outcomes)
        }
    }
}
