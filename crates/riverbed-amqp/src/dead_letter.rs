//! `AmqpDeadLetters`: a durable RabbitMQ queue that keeps dead letters with their reason.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use lapin::BasicProperties;
use lapin::types::ShortString;
use riverbed_core::{DeadLetter, DeadLetterSink, Failure};

use crate::config::AmqpDeadLetterConfig;
use crate::error::Result;
use crate::headers::to_table;
use crate::publisher::{Outgoing, Published, Publisher, Topology};
use crate::settings::{ConnectionSettings, DeadLetterSettings, QueueSpec};

/// Publishes dead letters to a durable queue, persistent and with publisher confirms.
///
/// Each letter keeps the original payload and headers, plus the dead-letter facts as headers
/// (`x-riverbed-reason`, `-error`, `-attempts`, `-stage`, `-first-failure-ms`,
/// `-last-failure-ms`, `-original-exchange`, `-original-subject`). `write` returns `Ok` only
/// after the broker confirmed every letter; a nack or a return is an error, so the originals
/// stay unacknowledged and nothing is lost.
pub struct AmqpDeadLetters {
    publisher: Publisher,
    queue: String,
}

impl AmqpDeadLetters {
    /// Checks `config` and builds the destination; it connects on first use.
    pub fn new(config: AmqpDeadLetterConfig) -> Result<Self> {
        let s = DeadLetterSettings::try_from(config)?;
        Ok(Self::from_parts(&s.connection, s.queue, s.confirm_timeout))
    }

    pub(crate) fn from_parts(
        connection: &ConnectionSettings,
        queue: QueueSpec,
        confirm_timeout: Duration,
    ) -> Self {
        let name = queue.name.clone();
        let topology = Topology {
            exchanges: Vec::new(),
            queues: vec![queue],
        };
        AmqpDeadLetters {
            publisher: Publisher::new(connection, topology, confirm_timeout, "dead_letters"),
            queue: name,
        }
    }

    /// The queue letters go to.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// Connects and declares the queue now, rather than on the first letter: a refused login
    /// or a conflicting queue shows at start. Optional.
    pub async fn connect(&self) -> Result<()> {
        self.publisher.connect().await
    }

    /// Closes the connection (a later write reconnects).
    pub async fn close(&self) {
        self.publisher.close().await;
    }

    fn outgoing(&self, letter: &DeadLetter) -> Outgoing {
        let m = &letter.message;
        let mut p = BasicProperties::default()
            .with_delivery_mode(2)
            .with_headers(to_table(&letter.headers()));
        if let Some(id) = m
            .meta
            .message_id
            .as_deref()
            .and_then(|i| ShortString::try_new(i).ok())
        {
            p = p.with_message_id(id);
        }
        if let Some(t) = m
            .meta
            .timestamp
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        {
            p = p.with_timestamp(t.as_secs());
        }
        Outgoing {
            exchange: ShortString::default(),
            routing_key: ShortString::from(self.queue.as_str()),
            payload: m.payload.clone(),
            properties: p,
        }
    }
}

#[async_trait]
impl DeadLetterSink for AmqpDeadLetters {
    fn describe(&self) -> String {
        format!("amqp dead-letter queue `{}`", self.queue)
    }

    async fn write(&self, letters: &[DeadLetter]) -> Result<(), Failure> {
        let outgoing: Vec<Outgoing> = letters.iter().map(|l| self.outgoing(l)).collect();
        let results = self
            .publisher
            .publish(&outgoing, true)
            .await
            .map_err(|e| Failure::unavailable(e.to_string()))?;
        let failed: Vec<&Published> = results
            .iter()
            .filter(|r| **r != Published::Confirmed)
            .collect();
        match failed.first() {
            None => Ok(()),
            Some(first) => Err(Failure::unavailable(format!(
                "{} of {} dead letters not confirmed by queue `{}` (first: {first:?})",
                failed.len(),
                letters.len(),
                self.queue
            ))),
        }
    }
}
