//! A sports odds feed simulator, shaped like the real providers' feeds: producers publish odds
//! changes and an `alive` every few seconds to a topic exchange; clients may only declare
//! exclusive, non-durable, server-named queues, so whatever is published while a client is
//! not connected is gone from RabbitMQ, and the client asks the HTTP recovery endpoint to
//! replay it.
//!
//! # Layout
//! - [`feed`]: producers, their odds history and alive modes; the messages they send.
//! - `publish`: each producer's live loop (odds changes, alives) and recovery replays.
//! - `http`: `POST /v1/{producer}/recovery?after=&request_id=`, alive control, `/published`.
//!
//! # Messages (JSON; message id set; routing key in brackets)
//! - `odds_change` [`odds_change.<producer>.<event>`]: `producer`, `event` (`sr:match:N`),
//!   `market`, `seq` (per market, from 1), `home`, `away`, `timestamp` (ms), and
//!   `replay: true` when replayed. The message id `<producer>:<event>:<market>:<seq>` is the
//!   same for the live message and its replays.
//! - `alive` [`alive.<producer>`]: `producer`, `timestamp`, `subscribed` (1 or 0). Every odds
//!   change stamped at or before an alive's timestamp was published before it.
//! - `snapshot_complete` [`snapshot_complete.<producer>`]: `producer`, `request_id`, published
//!   after a recovery's replay.

#![forbid(unsafe_code)]

pub mod feed;
mod http;
mod publish;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use feed::{AliveMode, Feed, OddsChange, RecoveryRequest};

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The broker (`amqp://user:password@host:port/vhost`).
    pub amqp_url: String,
    /// The topic exchange published to (declared durable).
    pub exchange: String,
    /// The producers' ids.
    pub producers: Vec<u32>,
    /// Sport events per producer.
    pub events: u32,
    /// Markets per event.
    pub markets: u32,
    /// Odds changes per second, per producer.
    pub rate: u32,
    /// Odds changes per producer, then only alives; forever without it.
    pub count: Option<u64>,
    /// Time between a producer's alives.
    pub alive_every: Duration,
    /// The HTTP endpoints' address (port 0: any free port).
    pub listen: SocketAddr,
    /// Seed of the odds and markets chosen.
    pub seed: u64,
}

/// A running simulator.
pub struct Simulator {
    addr: SocketAddr,
    feed: Arc<Feed>,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<Result<()>>>,
}

impl Simulator {
    /// Connects, declares the exchange, serves the endpoints and starts every producer.
    pub async fn start(config: SimConfig) -> Result<Simulator> {
        let feed = Arc::new(Feed::new(&config.producers));
        let publisher =
            Arc::new(publish::Publisher::connect(&config.amqp_url, &config.exchange).await?);
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("listening on {}", config.listen))?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let app = http::router(http::AppState {
            feed: feed.clone(),
            publisher: publisher.clone(),
        });
        let serving = stop.clone();
        let mut tasks = vec![tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(serving.cancelled_owned())
                .await
                .context("serving HTTP")
        })];
        for &p in &config.producers {
            let run = publish::run_producer(
                feed.clone(),
                publisher.clone(),
                p,
                config.clone(),
                stop.clone(),
            );
            tasks.push(tokio::spawn(run));
        }
        tracing::info!(%addr, exchange = %config.exchange, producers = ?config.producers, "Feed simulator running");
        Ok(Simulator {
            addr,
            feed,
            stop,
            tasks,
        })
    }

    /// Where the HTTP endpoints are served.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The producers' state: history, alive modes, recovery requests received.
    pub fn feed(&self) -> &Arc<Feed> {
        &self.feed
    }

    /// A task ended (a lost broker connection ends the simulator); its error, if any.
    pub fn failed(&self) -> bool {
        self.tasks.iter().any(|t| t.is_finished())
    }

    /// Stops publishing and serving; the first error a task met.
    pub async fn stop(self) -> Result<()> {
        self.stop.cancel();
        let mut first = Ok(());
        for t in self.tasks {
            let r = t.await.context("a simulator task panicked").and_then(|r| r);
            if first.is_ok() {
                first = r;
            }
        }
        first
    }
}
