//! Publishing to the topic exchange: each producer's live loop (odds changes and alives, in
//! timestamp order) and recovery replays, which overlap the live traffic.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::SimConfig;
use crate::feed::Feed;

/// A connection and a confirm channel on the feed's exchange.
pub(crate) struct Publisher {
    _connection: Connection,
    channel: Channel,
    exchange: String,
}

impl Publisher {
    /// Connects and declares the topic exchange (durable: it outlives the consumers' queues).
    pub async fn connect(url: &str, exchange: &str) -> Result<Publisher> {
        let connection = Connection::connect(url, ConnectionProperties::default())
            .await
            .context("connecting to RabbitMQ")?;
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        channel
            .exchange_declare(
                exchange.into(),
                lapin::ExchangeKind::Topic,
                durable,
                FieldTable::default(),
            )
            .await
            .with_context(|| format!("declaring exchange `{exchange}`"))?;
        Ok(Publisher {
            _connection: connection,
            channel,
            exchange: exchange.to_owned(),
        })
    }

    /// Publishes one message and waits for the broker's confirm. Without a bound queue the
    /// broker drops it, as the real feed's broker does for a client that is not connected.
    pub async fn send(&self, routing_key: &str, message_id: &str, body: &Value) -> Result<()> {
        let props = BasicProperties::default()
            .with_message_id(message_id.into())
            .with_content_type("application/json".into());
        let confirm = self
            .channel
            .basic_publish(
                self.exchange.as_str().into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                &serde_json::to_vec(body)?,
                props,
            )
            .await?
            .await?;
        if let Confirmation::Nack(_) = confirm {
            bail!("the broker refused {message_id}");
        }
        Ok(())
    }

    /// Publishes `producer`'s alive, if its mode sends one.
    async fn send_alive(&self, feed: &Feed, producer: u32) -> Result<()> {
        if let Some(a) = feed.alive(producer) {
            let id = format!("alive:{producer}:{}", a.timestamp);
            self.send(&format!("alive.{producer}"), &id, &a.body())
                .await?;
        }
        Ok(())
    }
}

/// One producer's live traffic until `stop`: `config.rate` odds changes a second (until
/// `config.count` of them), and an alive every `config.alive_every`. Both come from this one
/// loop, so an alive follows every odds change stamped before it.
pub(crate) async fn run_producer(
    feed: Arc<Feed>,
    publisher: Arc<Publisher>,
    producer: u32,
    config: SimConfig,
    stop: CancellationToken,
) -> Result<()> {
    let mut rng = SmallRng::seed_from_u64(config.seed ^ u64::from(producer));
    let period = Duration::from_secs_f64(1.0 / f64::from(config.rate.max(1)));
    let mut odds_tick = tokio::time::interval(period);
    let mut alive_tick = tokio::time::interval(config.alive_every);
    let mut sent = 0u64;
    loop {
        let more = config.count.is_none_or(|c| sent < c);
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = alive_tick.tick() => publisher.send_alive(&feed, producer).await?,
            _ = odds_tick.tick(), if more => {
                let event = rng.random_range(0..config.events.max(1));
                let market = rng.random_range(0..config.markets.max(1));
                let odds = (rng.random_range(1.01..5.0), rng.random_range(1.01..5.0));
                let change = feed.next_odds(producer, event, market, odds);
                publisher
                    .send(&change.routing_key(), &change.message_id(), &change.body(false))
                    .await?;
                sent += 1;
                if config.count == Some(sent) {
                    feed.finish(producer);
                    tracing::info!(producer, sent, "Every odds change published");
                }
            }
        }
    }
}

/// Replays `producer`'s odds changes from `after` on, then publishes `snapshot_complete`
/// with `request_id`. Returns how many were replayed.
pub(crate) async fn replay(
    feed: &Feed,
    publisher: &Publisher,
    producer: u32,
    after: Option<u64>,
    request_id: u64,
) -> Result<usize> {
    let changes = feed.since(producer, after).unwrap_or_default();
    for c in &changes {
        publisher
            .send(&c.routing_key(), &c.message_id(), &c.body(true))
            .await?;
    }
    let body = json!({
        "type": "snapshot_complete",
        "producer": producer,
        "request_id": request_id,
        "timestamp": changes.last().map_or(0, |c| c.timestamp),
    });
    let id = format!("snapshot_complete:{producer}:{request_id}");
    publisher
        .send(&format!("snapshot_complete.{producer}"), &id, &body)
        .await?;
    Ok(changes.len())
}
