//! `AmqpSink`: publishes to an exchange with confirms, persistence and `mandatory`, so an
//! unroutable message fails loudly instead of vanishing.

use std::time::SystemTime;

use async_trait::async_trait;
use lapin::BasicProperties;
use lapin::types::ShortString;
use riverbed_core::{BatchOutcome, Failure, Message, Outcome, Sink};

use crate::config::AmqpSinkConfig;
use crate::error::Result;
use crate::headers::to_table;
use crate::publisher::{Outgoing, Published, Publisher, Topology};
use crate::settings::SinkSettings;

/// Publishes each batch in order on one channel, then waits for every publisher confirm.
///
/// Per message: confirmed → `Ok`; returned by the broker because no queue matched (with
/// `mandatory`, the default) → `Permanent("unroutable")`, so it is dead-lettered rather than
/// silently dropped; nacked → `Transient` (retried, using up an attempt); lost with the
/// connection, unconfirmed in time, or no connection at all → `Unavailable` (the partition waits
/// for the broker without using up attempts). A retried message may have been stored by the
/// broker already, so downstream consumers should dedupe by message id, which is kept. Messages are persistent by default. The sink reconnects on the next write after a
/// connection loss and declares its exchanges again.
///
/// A nack (rare: a broker-internal error or a full queue with `reject-publish`) may leave a
/// later message of the same key committed while the nacked one is retried.
pub struct AmqpSink {
    settings: SinkSettings,
    publisher: Publisher,
}

impl AmqpSink {
    /// Checks `config` and builds the sink; it connects on first write.
    pub fn new(config: AmqpSinkConfig) -> Result<Self> {
        let settings = SinkSettings::try_from(config)?;
        let topology = Topology {
            exchanges: settings.exchanges.clone(),
            queues: Vec::new(),
        };
        let publisher = Publisher::new(
            &settings.connection,
            topology,
            settings.confirm_timeout,
            "sink",
        );
        Ok(AmqpSink {
            settings,
            publisher,
        })
    }

    /// Connects and declares the exchanges now, rather than on the first write: a refused
    /// login or a conflicting exchange shows at start. Optional.
    pub async fn connect(&self) -> Result<()> {
        self.publisher.connect().await
    }

    fn outgoing(&self, m: &Message) -> Result<Outgoing, String> {
        let routing_key = self.settings.routing_key.render(m)?;
        let mut p = BasicProperties::default().with_headers(to_table(&m.headers));
        if self.settings.persistent {
            p = p.with_delivery_mode(2);
        }
        if let Some(id) = &m.meta.message_id {
            p = p.with_message_id(
                ShortString::try_new(id.as_str())
                    .map_err(|_| "message id is longer than 255 bytes".to_owned())?,
            );
        }
        if let Some(t) = m
            .meta
            .timestamp
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        {
            p = p.with_timestamp(t.as_secs());
        }
        Ok(Outgoing {
            exchange: ShortString::from(self.settings.exchange.as_str()),
            routing_key: ShortString::from(routing_key),
            payload: m.payload.clone(),
            properties: p,
        })
    }

    fn outcome(&self, o: &Outgoing, result: Published) -> Outcome {
        match result {
            Published::Confirmed => Outcome::Ok,
            Published::Returned { code, text } => Outcome::Permanent(Failure::new(
                "unroutable",
                format!(
                    "broker returned the message ({code} {text}): no queue is bound to \
                     exchange `{}` for routing key `{}`",
                    self.settings.exchange, o.routing_key
                ),
            )),
            Published::Nacked => Outcome::Transient(Failure::new(
                "nacked",
                format!(
                    "broker refused the message on exchange `{}`",
                    self.settings.exchange
                ),
            )),
            Published::Lost(e) => Outcome::Unavailable(Failure::unavailable(e)),
        }
    }
}

#[async_trait]
impl Sink for AmqpSink {
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
            let results = match self
                .publisher
                .publish(&outgoing, self.settings.mandatory)
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(
                        exchange = %self.settings.exchange,
                        error = %e,
                        "Cannot publish"
                    );
                    return BatchOutcome::unavailable(Failure::unavailable(e.to_string()));
                }
            };
            for ((i, o), r) in index.into_iter().zip(&outgoing).zip(results) {
                if let Published::Returned { code, text } = &r {
                    tracing::error!(
                        exchange = %self.settings.exchange,
                        routing_key = %o.routing_key,
                        code,
                        reply = %text,
                        "Message unroutable; failing it instead of dropping it"
                    );
                    metrics::counter!("riverbed_amqp_unroutable_total").increment(1);
                }
                outcomes[i] = self.outcome(o, r);
            }
        }
        if outcomes.iter().all(Outcome::is_ok) {
            BatchOutcome::Committed
        } else {
            BatchOutcome::Each(outcomes)
        }
    }

    async fn close(&self) -> Result<(), Failure> {
        self.publisher.close().await;
        Ok(())
    }
}
