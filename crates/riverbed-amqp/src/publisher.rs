//! Publishing with confirms: a lazily (re)connected connection, a pool of confirm channels, and
//! per-message results that tell confirmed, returned (unroutable), nacked and lost apart.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::ShortString;
use lapin::{BasicProperties, Channel, Confirmation, Connection};

use crate::connect::{Connector, close_within};
use crate::error::{Error, Result};
use crate::settings::{ConnectionSettings, ExchangeSpec, QueueSpec};
use crate::topology;

/// One message to publish.
#[derive(Debug, Clone)]
pub(crate) struct Outgoing {
    pub exchange: ShortString,
    pub routing_key: ShortString,
    pub payload: Bytes,
    pub properties: BasicProperties,
}

/// What became of one published message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Published {
    /// The broker confirmed it (it is routed and stored as the queues require).
    Confirmed,
    /// The broker returned it: no queue matched (`mandatory`).
    Returned { code: u16, text: String },
    /// The broker refused it (an internal error, a full queue with `reject-publish`).
    Nacked,
    /// The connection or channel failed, or no confirm came in time: it may or may not be stored.
    Lost(String),
}

/// What to declare on every new connection.
#[derive(Debug, Clone, Default)]
pub(crate) struct Topology {
    pub exchanges: Vec<ExchangeSpec>,
    pub queues: Vec<QueueSpec>,
}

struct Live {
    connector: Connector,
    connection: Option<Connection>,
    generation: u64,
}

/// A confirm-mode publisher shared by concurrent writers. Each batch has a channel to itself,
/// so the broker's returns and confirms can be attributed to the right messages.
pub(crate) struct Publisher {
    live: tokio::sync::Mutex<Live>,
    idle: Mutex<Vec<(u64, Channel)>>,
    declared: Mutex<(u64, HashSet<String>)>,
    topology: Topology,
    confirm_timeout: Duration,
    /// The bound on one round trip to the broker (a channel, a declaration, the goodbye).
    answer_timeout: Duration,
    role: &'static str,
}

/// Waits for `f` at most `after`: a broker that stops answering (stalled, or blocking
/// publishers on a resource alarm) must not hang a writer or the shutdown.
async fn bounded<T>(
    action: &'static str,
    after: Duration,
    f: impl Future<Output = Result<T>>,
) -> Result<T> {
    tokio::time::timeout(after, f)
        .await
        .unwrap_or(Err(Error::Timeout { action, after }))
}

impl Publisher {
    /// A publisher that connects on first use; `role` labels its logs and metrics.
    pub fn new(
        connection: &ConnectionSettings,
        topology: Topology,
        confirm_timeout: Duration,
        role: &'static str,
    ) -> Self {
        Publisher {
            live: tokio::sync::Mutex::new(Live {
                connector: Connector::new(connection),
                connection: None,
                generation: 0,
            }),
            idle: Mutex::new(Vec::new()),
            declared: Mutex::new((0, HashSet::new())),
            topology,
            confirm_timeout,
            answer_timeout: connection.connect_timeout,
            role,
        }
    }

    /// Takes an idle channel of the live connection, or opens one (connecting if needed).
    async fn checkout(&self) -> Result<(u64, Channel)> {
        while let Some((generation, ch)) = self.idle.lock().expect("pool lock").pop() {
            if ch.status().connected() {
                return Ok((generation, ch));
            }
        }
        let mut live = self.live.lock().await;
        let after = self.answer_timeout;
        if !live
            .connection
            .as_ref()
            .is_some_and(|c| c.status().connected())
        {
            let was_connected = live.connection.take().is_some();
            let (conn, url) = live.connector.connect().await?;
            bounded("declaring the publisher's topology", after, async {
                let ch = conn.create_channel().await?;
                topology::declare_exchanges(&ch, &self.topology.exchanges).await?;
                for q in &self.topology.queues {
                    topology::declare_queue(&ch, q).await?;
                }
                close_within(after, [&ch], None).await;
                Ok(())
            })
            .await?;
            live.generation += 1;
            live.connection = Some(conn);
            if was_connected {
                metrics::counter!("riverbed_amqp_reconnects_total", "role" => self.role)
                    .increment(1);
            }
            tracing::info!(role = self.role, url = %url, "Publisher connected");
        }
        let conn = live.connection.as_ref().expect("connected just above");
        let ch = bounded("opening a confirm channel", after, async {
            let ch = conn.create_channel().await?;
            ch.confirm_select(ConfirmSelectOptions::default()).await?;
            Ok(ch)
        })
        .await;
        if ch.is_err() {
            // A connection that does not answer is not worth keeping: the next write connects
            // anew.
            live.connection = None;
        }
        Ok((live.generation, ch?))
    }

    fn checkin(&self, generation: u64, ch: Channel) {
        if ch.status().connected() {
            self.idle.lock().expect("pool lock").push((generation, ch));
        }
    }

    /// Connects (declaring the topology) unless connected already.
    pub async fn connect(&self) -> Result<()> {
        let (generation, ch) = self.checkout().await?;
        self.checkin(generation, ch);
        Ok(())
    }

    /// Declares `q` once per connection (retry tiers are declared on first use).
    pub async fn ensure_queue(&self, q: &QueueSpec) -> Result<()> {
        let (generation, ch) = self.checkout().await?;
        {
            let declared = self.declared.lock().expect("declared lock");
            if declared.0 == generation && declared.1.contains(&q.name) {
                drop(declared);
                self.checkin(generation, ch);
                return Ok(());
            }
        }
        topology::declare_queue(&ch, q).await?;
        {
            let mut declared = self.declared.lock().expect("declared lock");
            if declared.0 != generation {
                *declared = (generation, HashSet::new());
            }
            declared.1.insert(q.name.clone());
        }
        self.checkin(generation, ch);
        Ok(())
    }

    /// Forgets which queues were declared, so the next use declares them again.
    pub fn forget_declared(&self) {
        self.declared.lock().expect("declared lock").1.clear();
    }

    /// Publishes `batch` in order on one channel, then waits for every confirm. Returns one
    /// result per message, or an error when no channel could be had at all.
    pub async fn publish(&self, batch: &[Outgoing], mandatory: bool) -> Result<Vec<Published>> {
        let (generation, ch) = self.checkout().await?;
        let options = BasicPublishOptions {
            mandatory,
            immediate: false,
        };
        let mut confirms = Vec::with_capacity(batch.len());
        let mut failure = None;
        // Sending is bounded too: a broker blocking publishers (a resource alarm) stops
        // reading, and a send that never ends would hold the batch and the shutdown forever.
        let deadline = tokio::time::Instant::now() + self.confirm_timeout;
        for o in batch {
            let sent = ch.basic_publish(
                o.exchange.clone(),
                o.routing_key.clone(),
                options,
                &o.payload,
                o.properties.clone(),
            );
            match tokio::time::timeout_at(deadline, sent).await {
                Ok(Ok(c)) => confirms.push(c),
                Ok(Err(e)) => {
                    failure = Some(e.to_string());
                    break;
                }
                Err(_) => {
                    failure = Some(format!(
                        "could not send within {}",
                        humantime::format_duration(self.confirm_timeout)
                    ));
                    break;
                }
            }
        }
        let answers = join_all(
            confirms
                .into_iter()
                .map(|c| tokio::time::timeout_at(deadline, c)),
        )
        .await;
        let mut results = Vec::with_capacity(batch.len());
        let mut returned = Vec::new();
        for answer in answers {
            results.push(match answer {
                Ok(Ok(Confirmation::Ack(r))) => {
                    returned.extend(r);
                    Published::Confirmed
                }
                Ok(Ok(Confirmation::NotRequested)) => Published::Confirmed,
                Ok(Ok(Confirmation::Nack(r))) => {
                    returned.extend(r);
                    Published::Nacked
                }
                Ok(Err(e)) => Published::Lost(e.to_string()),
                Err(_) => Published::Lost(format!(
                    "no publisher confirm within {}",
                    humantime::format_duration(self.confirm_timeout)
                )),
            });
        }
        let lost = failure.unwrap_or_else(|| "channel closed".into());
        results.resize(batch.len(), Published::Lost(lost));
        attribute_returns(batch, &mut results, returned);
        if results.iter().all(|r| !matches!(r, Published::Lost(_))) {
            self.checkin(generation, ch);
        }
        Ok(results)
    }

    /// Closes the idle channels and the connection, if any.
    pub async fn close(&self) {
        let idle = std::mem::take(&mut *self.idle.lock().expect("pool lock"));
        let connection = self.live.lock().await.connection.take();
        let channels = idle.iter().map(|(_, ch)| ch);
        if !close_within(self.answer_timeout, channels, connection.as_ref()).await {
            tracing::warn!(
                role = self.role,
                "The broker did not answer the close; leaving without it"
            );
        }
    }
}

/// The client hands a returned message to whichever confirm it completes first, which need not
/// be the returned message's own; match each return to the message it is by content.
fn attribute_returns(
    batch: &[Outgoing],
    results: &mut [Published],
    returned: Vec<lapin::message::BasicReturnMessage>,
) {
    for r in returned {
        let d = &r.delivery;
        let found = batch.iter().enumerate().position(|(i, o)| {
            !matches!(results[i], Published::Returned { .. })
                && o.routing_key == d.routing_key
                && o.exchange == d.exchange
                && o.payload.as_ref() == d.data.as_slice()
                && o.properties.message_id() == d.properties.message_id()
        });
        match found {
            Some(i) => {
                results[i] = Published::Returned {
                    code: r.reply_code,
                    text: r.reply_text.to_string(),
                }
            }
            None => tracing::warn!(
                routing_key = %d.routing_key,
                "Broker returned a message that matches none of the batch"
            ),
        }
    }
}
