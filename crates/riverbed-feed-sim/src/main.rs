//! `riverbed-feed-sim`: run the sports odds feed simulator until SIGINT / SIGTERM.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Result;
use clap::Parser;
use riverbed_feed_sim::{SimConfig, Simulator};

/// Publishes odds changes and per-producer alives to a RabbitMQ topic exchange, and answers
/// recovery requests (`POST /v1/{producer}/recovery?after=<ms>&request_id=<id>`) by replaying.
/// Alives can be silenced or sent with `subscribed=0` for a while:
/// `POST /control/{producer}/alives?mode=silent&duration=30s`.
#[derive(Debug, Parser)]
#[command(name = "riverbed-feed-sim", version, about)]
struct Args {
    /// The broker URL.
    #[arg(
        long,
        env = "FEED_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    amqp_url: String,
    /// The topic exchange.
    #[arg(long, default_value = "sports-feed")]
    exchange: String,
    /// Producer ids, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,3")]
    producers: Vec<u32>,
    /// Sport events per producer.
    #[arg(long, default_value_t = 20)]
    events: u32,
    /// Markets per event.
    #[arg(long, default_value_t = 5)]
    markets: u32,
    /// Odds changes per second, per producer.
    #[arg(long, default_value_t = 50)]
    rate: u32,
    /// Odds changes per producer, then only alives (forever without it).
    #[arg(long)]
    count: Option<u64>,
    /// Time between a producer's alives.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    alive_every: Duration,
    /// Where the HTTP endpoints listen.
    #[arg(long, default_value = "127.0.0.1:8088")]
    listen: SocketAddr,
    /// Seed of the odds and markets chosen.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let a = Args::parse();
    let sim = Simulator::start(SimConfig {
        amqp_url: a.amqp_url,
        exchange: a.exchange,
        producers: a.producers,
        events: a.events,
        markets: a.markets,
        rate: a.rate,
        count: a.count,
        alive_every: a.alive_every,
        listen: a.listen,
        seed: a.seed,
    })
    .await?;
    println!(
        "{}",
        serde_json::json!({"listening": sim.addr().to_string()})
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        _ = wait_failed(&sim) => {}
    }
    sim.stop().await
}

/// Resolves when a simulator task ends by itself (a lost broker connection).
async fn wait_failed(sim: &Simulator) {
    while !sim.failed() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
