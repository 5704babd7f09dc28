//! `NatsDeadLetters`: dead letters published to a JetStream subject, with their reason, error,
//! attempts, stage and original subject as headers, each awaiting its publish ack.

use async_trait::async_trait;
use riverbed_core::{DeadLetter, DeadLetterSink, Failure};

use crate::config::NatsDeadLetterConfig;
use crate::error::Result;
use crate::headers::to_nats;
use crate::publisher::{Ensure, Outgoing, Publisher};
use crate::settings::{Connection, DeadLetterSettings, DeadLetterTarget};

/// Publishes dead letters to a subject; the originals are acknowledged only after the server
/// stored every letter of the group. A stream is created for the subject if configured.
pub struct NatsDeadLetters {
    subject: String,
    publisher: Publisher,
}

impl NatsDeadLetters {
    /// Checks `config` and builds the destination; it connects on first write.
    pub fn new(config: NatsDeadLetterConfig) -> Result<Self> {
        let s = DeadLetterSettings::try_from(config)?;
        Ok(Self::from_parts(s.connection, s.target))
    }

    pub(crate) fn from_parts(connection: Connection, target: DeadLetterTarget) -> Self {
        let ensure = target.stream.map(|stream| Ensure {
            stream,
            create_with: vec![target.stream_subject.clone()],
            captures: target.subject.clone(),
        });
        NatsDeadLetters {
            publisher: Publisher::new(connection, target.publish_timeout, ensure),
            subject: target.subject,
        }
    }

    /// The subject letters go to.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// Connects (and creates the dead-letter stream if configured) now. Optional.
    pub async fn connect(&self) -> Result<()> {
        self.publisher.context().await.map(|_| ())
    }
}

#[async_trait]
impl DeadLetterSink for NatsDeadLetters {
    fn describe(&self) -> String {
        format!("nats subject `{}`", self.subject)
    }

    async fn write(&self, letters: &[DeadLetter]) -> Result<(), Failure> {
        let batch = letters
            .iter()
            .map(|l| Outgoing {
                subject: self.subject.clone(),
                headers: to_nats(&l.headers()),
                payload: l.message.payload.clone(),
                message_id: None,
            })
            .collect();
        let results = self
            .publisher
            .publish(batch)
            .await
            .map_err(|e| Failure::unavailable(e.to_string()))?;
        match results.into_iter().find_map(Result::err) {
            None => Ok(()),
            Some(e) => Err(Failure::unavailable(format!(
                "dead letter to `{}`: {e}",
                self.subject
            ))),
        }
    }
}
