//! A control queue: commands, one JSON body each, taken one at a time; each is answered on its
//! `reply_to` queue (with its `correlation_id`), with a publisher confirm, before it is
//! acknowledged. A command whose answer could not be sent is still acknowledged (it has been
//! carried out; doing it again on a redelivery would surprise more than a missing answer), and
//! the failure is logged. A lost connection is retried with backoff until the stop.

use std::time::Duration;

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use serde::Deserialize;

use crate::config::{
    AmqpDeadLetterConfig, QueueType, default_confirm_timeout, default_connect_timeout, default_urls,
};
use crate::connect::{Connector, close_within};
use crate::error::{Error, Result};
use crate::settings::{ConnectionSettings, DeadLetterSettings, QueueSpec, short};
use crate::topology;
use crate::url::BrokerUrl;
use riverbed_core::Backoff;
use riverbed_core::tls::TlsConfig;

/// A control queue on RabbitMQ.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpControlConfig {
    /// Broker URLs (`amqp://user:password@host:port/vhost`), tried in turn. Credentials are
    /// never logged.
    #[serde(default = "default_urls")]
    pub urls: Vec<BrokerUrl>,
    /// Certificate files for `amqps://` URLs (see the source's `tls`).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Name shown for the connection in the broker's management tools.
    #[serde(default)]
    pub connection_name: Option<String>,
    /// How long one connection attempt may take; also bounds every other round trip.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// The queue commands are sent to (declared durable).
    pub queue: String,
    /// Its type (default classic).
    #[serde(default)]
    pub queue_type: Option<QueueType>,
    /// How long publishing an answer and waiting for its confirm may take.
    #[serde(default = "default_confirm_timeout", with = "humantime_serde")]
    pub confirm_timeout: Duration,
}

/// Serves the commands of one control queue.
#[derive(Debug, Clone)]
pub struct ControlQueue {
    connection: ConnectionSettings,
    queue: QueueSpec,
    confirm_timeout: Duration,
}

/// Why a session with the control queue ended.
enum Ended {
    Stopped,
    Lost(String),
}

impl ControlQueue {
    /// Checks `config` (URLs, TLS files, the queue's name) without connecting: the checks of a
    /// dead-letter queue, which is the same kind of thing (a durable queue on some brokers).
    pub fn new(config: AmqpControlConfig) -> Result<Self> {
        let name = format!("riverbed control {}", config.queue);
        let s = DeadLetterSettings::try_from(AmqpDeadLetterConfig {
            urls: config.urls,
            tls: config.tls,
            connection_name: Some(config.connection_name.unwrap_or(name)),
            connect_timeout: config.connect_timeout,
            queue: config.queue,
            queue_type: config.queue_type,
            confirm_timeout: config.confirm_timeout,
        })?;
        Ok(ControlQueue {
            connection: s.connection,
            queue: s.queue,
            confirm_timeout: s.confirm_timeout,
        })
    }

    /// The queue's name.
    pub fn queue(&self) -> &str {
        &self.queue.name
    }

    /// Takes commands until `stop` completes: each body goes to `handle`, whose answer is
    /// published to the command's `reply_to` before the command is acknowledged. Reconnects
    /// after a lost connection, waiting longer each time (up to the reconnect maximum), from
    /// the shortest wait again once a session consumed.
    pub async fn serve<H, F>(self, mut handle: H, stop: impl Future<Output = ()>)
    where
        H: FnMut(Vec<u8>) -> F,
        F: Future<Output = Vec<u8>>,
    {
        let mut stop = std::pin::pin!(stop);
        let mut connector = Connector::new(&self.connection);
        let mut backoff = Backoff::new(
            self.connection.reconnect_initial,
            self.connection.reconnect_max,
        );
        loop {
            let ended = tokio::select! {
                ended = self.session(&mut connector, &mut handle, &mut backoff) => ended,
                () = &mut stop => Ended::Stopped,
            };
            let wait = backoff.next_delay();
            match ended {
                Ended::Stopped => return,
                Ended::Lost(e) => {
                    tracing::warn!(queue = %self.queue.name, error = %e, retry_in = ?wait,
                        "Control queue unavailable");
                }
            }
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = &mut stop => return,
            }
        }
    }

    /// One connection: declares the queue, then serves commands one by one.
    async fn session<H, F>(
        &self,
        connector: &mut Connector,
        handle: &mut H,
        backoff: &mut Backoff,
    ) -> Ended
    where
        H: FnMut(Vec<u8>) -> F,
        F: Future<Output = Vec<u8>>,
    {
        let (conn, url) = match connector.connect().await {
            Ok(c) => c,
            Err(e) => return Ended::Lost(e.to_string()),
        };
        let opened = tokio::time::timeout(self.connection.connect_timeout, self.open(&conn)).await;
        let (commands, replies) = match opened {
            Ok(Ok(channels)) => channels,
            Ok(Err(e)) => return self.leave(&conn, e).await,
            Err(_) => {
                let e = Error::Timeout {
                    action: "opening the control queue",
                    after: self.connection.connect_timeout,
                };
                return self.leave(&conn, e).await;
            }
        };
        let consumer = commands.basic_consume(
            short("queue", &self.queue.name).expect("checked in new"),
            ShortString::from("riverbed-control"),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        );
        let mut consumer = match consumer.await {
            Ok(c) => c,
            Err(source) => {
                let e = Error::Topology {
                    action: format!("consume control queue `{}`", self.queue.name),
                    source,
                };
                return self.leave(&conn, e).await;
            }
        };
        tracing::info!(queue = %self.queue.name, url = %url, "Control queue consumed");
        backoff.reset();
        while let Some(next) = consumer.next().await {
            let mut delivery = match next {
                Ok(d) => d,
                Err(e) => return self.leave(&conn, Error::Amqp(e)).await,
            };
            let answer = handle(std::mem::take(&mut delivery.data)).await;
            if let Some(to) = delivery.properties.reply_to() {
                let correlation = delivery.properties.correlation_id().clone();
                if let Err(e) = self.reply(&replies, to, correlation, &answer).await {
                    tracing::warn!(queue = %self.queue.name, reply_to = %to, error = %e,
                        "Control answer not sent");
                }
            }
            if let Err(e) = delivery.acker.ack(BasicAckOptions::default()).await {
                return self.leave(&conn, Error::Amqp(e)).await;
            }
        }
        self.leave(&conn, "the broker ended the consumer").await
    }

    /// The command channel (one unacknowledged command at a time) and the confirm channel
    /// answers go out on, with the queue declared.
    async fn open(&self, conn: &Connection) -> Result<(Channel, Channel)> {
        let commands = conn.create_channel().await.map_err(Error::Amqp)?;
        topology::declare_queue(&commands, &self.queue).await?;
        commands
            .basic_qos(1, BasicQosOptions::default())
            .await
            .map_err(Error::Amqp)?;
        let replies = conn.create_channel().await.map_err(Error::Amqp)?;
        replies
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(Error::Amqp)?;
        Ok((commands, replies))
    }

    /// Publishes `answer` to queue `to` through the default exchange and waits for the confirm.
    async fn reply(
        &self,
        channel: &Channel,
        to: &ShortString,
        correlation: Option<ShortString>,
        answer: &[u8],
    ) -> std::result::Result<(), String> {
        let mut properties =
            BasicProperties::default().with_content_type(ShortString::from("application/json"));
        if let Some(c) = correlation {
            properties = properties.with_correlation_id(c);
        }
        let sent = async {
            let confirm = channel
                .basic_publish(
                    ShortString::from(""),
                    to.clone(),
                    BasicPublishOptions::default(),
                    answer,
                    properties,
                )
                .await
                .map_err(|e| e.to_string())?;
            match confirm.await.map_err(|e| e.to_string())? {
                Confirmation::Nack(_) => Err("the broker refused the answer".to_owned()),
                _ => Ok(()),
            }
        };
        tokio::time::timeout(self.confirm_timeout, sent)
            .await
            .unwrap_or_else(|_| Err("no confirm in time".to_owned()))
    }

    async fn leave(&self, conn: &Connection, e: impl std::fmt::Display) -> Ended {
        close_within(self.connection.connect_timeout, [], Some(conn)).await;
        Ended::Lost(e.to_string())
    }
}
