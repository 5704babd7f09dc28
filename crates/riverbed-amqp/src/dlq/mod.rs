//! Operating a dead-letter queue: browsing its letters without consuming them, removing chosen
//! ones, and redriving copies, with confirms, to where they came from.
//!
//! - [`DeadLetterQueue`]: which queue, on which broker (a source's own `<queue>.dlq`, or a
//!   `[dead_letter] kind = "amqp"` queue).
//! - [`Browser`]: one channel that takes letters with `basic.get` and does not acknowledge
//!   them; closing it gives back every letter not acknowledged, at its place. It takes at most
//!   as many letters as the queue held when it opened, so a browse ends, and it never sees a
//!   letter twice.
//! - [`Redriver`]: publishes redrive copies with confirms and `mandatory`.

mod browse;
mod letter;

pub use browse::Browser;
pub use letter::{QueuedLetter, REDRIVE_RUN_HEADER, REDRIVEN_HEADER};

use std::time::Duration;

use lapin::types::ShortString;

use crate::config::{AmqpDeadLetterConfig, AmqpSourceConfig};
use crate::error::{Result, config};
use crate::publisher::{Outgoing, Published, Publisher, Topology};
use crate::settings::{ConnectionSettings, DeadLetterSettings, SourceSettings};

/// A dead-letter queue to browse, purge or redrive from.
#[derive(Debug, Clone)]
pub struct DeadLetterQueue {
    connection: ConnectionSettings,
    queue: String,
}

impl DeadLetterQueue {
    /// The dead-letter queue of a source (`dead_letter_queue`, by default `<queue>.dlq`), on the
    /// source's brokers.
    pub fn of_source(source: AmqpSourceConfig) -> Result<Self> {
        let s = SourceSettings::try_from(source)?;
        let queue = s.dead_letter_queue.ok_or_else(|| {
            config(
                "dead_letter_queue",
                "is needed: a server-named queue has no default dead-letter queue",
            )
        })?;
        Ok(DeadLetterQueue {
            connection: s.connection,
            queue: queue.name,
        })
    }

    /// A `[dead_letter] kind = "amqp"` queue.
    pub fn new(config: AmqpDeadLetterConfig) -> Result<Self> {
        let s = DeadLetterSettings::try_from(config)?;
        Ok(DeadLetterQueue {
            connection: s.connection,
            queue: s.queue.name,
        })
    }

    /// The queue's name.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// Connects and opens a browsing channel; fails when the queue does not exist.
    pub async fn browse(&self) -> Result<Browser> {
        Browser::open(&self.connection, &self.queue).await
    }
}

/// Where redriven letters go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedriveTarget {
    /// This queue, through the default exchange (a pipeline's source queue).
    Queue(String),
    /// This exchange, with each letter's original routing key (the consistent-hash exchange
    /// of a partitioned pipeline: the key decides the partition queue again).
    Exchange(String),
    /// Each letter's original exchange and routing key: every queue bound there gets a copy.
    Original,
}

impl RedriveTarget {
    /// The exchange and routing key `letter` goes to, or why it cannot be sent.
    pub fn route(&self, letter: &QueuedLetter) -> std::result::Result<(String, String), String> {
        let key = || {
            letter
                .original_routing_key
                .clone()
                .ok_or_else(|| "the letter does not record its original routing key".to_owned())
        };
        match self {
            RedriveTarget::Queue(q) => Ok((String::new(), q.clone())),
            RedriveTarget::Exchange(x) => Ok((x.clone(), key()?)),
            RedriveTarget::Original => {
                Ok((letter.original_exchange.clone().unwrap_or_default(), key()?))
            }
        }
    }

    /// Says where letters go, for messages to the user.
    pub fn describe(&self) -> String {
        match self {
            RedriveTarget::Queue(q) => format!("queue `{q}`"),
            RedriveTarget::Exchange(x) => format!("exchange `{x}`"),
            RedriveTarget::Original => "their original exchanges".into(),
        }
    }
}

/// Sends redrive copies to a target, with publisher confirms and `mandatory` (an unroutable
/// copy is a failure, never a silent drop).
pub struct Redriver {
    publisher: Publisher,
    target: RedriveTarget,
}

impl Redriver {
    /// A redriver on a source's brokers.
    pub fn for_source(config: AmqpSourceConfig, target: RedriveTarget) -> Result<Self> {
        let confirm_timeout = config.confirm_timeout;
        let s = SourceSettings::try_from(config)?;
        Ok(Self::from_parts(&s.connection, confirm_timeout, target))
    }

    /// A redriver on the brokers of `queue` (for letters whose origin is on the same broker).
    pub fn on_broker_of(queue: &DeadLetterQueue, target: RedriveTarget) -> Self {
        Self::from_parts(&queue.connection, Duration::from_secs(30), target)
    }

    fn from_parts(c: &ConnectionSettings, confirm_timeout: Duration, t: RedriveTarget) -> Self {
        Redriver {
            publisher: Publisher::new(c, Topology::default(), confirm_timeout, "redrive"),
            target: t,
        }
    }

    /// The target.
    pub fn target(&self) -> &RedriveTarget {
        &self.target
    }

    /// Connects now, so that a refused login shows before any letter is taken.
    pub async fn connect(&self) -> Result<()> {
        self.publisher.connect().await
    }

    /// Publishes a copy of each letter (marked with `run`) and waits for the broker's confirms:
    /// one result per letter, `Ok` only when the broker confirmed and routed the copy.
    pub async fn send(
        &self,
        letters: &[&QueuedLetter],
        run: &str,
    ) -> Result<Vec<std::result::Result<(), String>>> {
        let mut results: Vec<std::result::Result<(), String>> = vec![Ok(()); letters.len()];
        let mut outgoing = Vec::new();
        let mut sent = Vec::new();
        for (i, l) in letters.iter().enumerate() {
            match self.outgoing(l, run) {
                Ok(o) => {
                    outgoing.push(o);
                    sent.push(i);
                }
                Err(e) => results[i] = Err(e),
            }
        }
        if outgoing.is_empty() {
            return Ok(results);
        }
        let published = self.publisher.publish(&outgoing, true).await?;
        for (i, p) in sent.into_iter().zip(published) {
            results[i] = match p {
                Published::Confirmed => Ok(()),
                Published::Returned { code, text } => Err(format!(
                    "unroutable: the broker returned it ({code} {text})"
                )),
                Published::Nacked => Err("the broker refused it (nack)".into()),
                Published::Lost(e) => Err(format!("not confirmed: {e}")),
            };
        }
        Ok(results)
    }

    fn outgoing(&self, l: &QueuedLetter, run: &str) -> std::result::Result<Outgoing, String> {
        let (exchange, key) = self.target.route(l)?;
        let short = |what: &str, s: String| {
            ShortString::try_new(s).map_err(|_| format!("{what} is longer than 255 bytes"))
        };
        Ok(Outgoing {
            exchange: short("the exchange", exchange)?,
            routing_key: short("the routing key", key)?,
            payload: l.payload.clone(),
            properties: l.redrive_properties(run),
        })
    }

    /// Closes the connection.
    pub async fn close(&self) {
        self.publisher.close().await;
    }
}
