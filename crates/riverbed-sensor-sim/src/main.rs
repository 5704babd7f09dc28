//! `riverbed-sensor-sim`: publish sensor readings until the count is reached or SIGINT /
//! SIGTERM; prints a one-line JSON summary.

#![forbid(unsafe_code)]

use std::path::PathBuf;

use anyhow::Result;
use clap::Parser;
use riverbed_sensor_sim::{SimConfig, run};

/// Publishes JSON sensor readings (`sensor_id`, `value`, `ts`, `seq`) to a RabbitMQ topic
/// exchange with publisher confirms, deterministic from a seed.
#[derive(Debug, Parser)]
#[command(name = "riverbed-sensor-sim", version, about)]
struct Args {
    /// The broker URL.
    #[arg(
        long,
        env = "SENSORS_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    amqp_url: String,
    /// The topic exchange (routing key `reading.<sensor_id>`).
    #[arg(long, default_value = "sensors.readings")]
    exchange: String,
    /// How many sensors.
    #[arg(long, default_value_t = 10)]
    sensors: u32,
    /// Readings a second, over all sensors.
    #[arg(long, default_value_t = 100)]
    rate: u32,
    /// Readings in all (forever without it).
    #[arg(long)]
    count: Option<u64>,
    /// Seed of the sensors chosen and their values.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The first reading's `seq`. Default: the time in microseconds since the Unix epoch, so
    /// a later run always starts above an earlier run's last `seq` (the pipeline takes a
    /// reading at or below its sensor's last counted `seq` for a redelivery).
    #[arg(long)]
    first_seq: Option<u64>,
    /// Append every confirmed reading to this file as a JSON line.
    #[arg(long)]
    out: Option<PathBuf>,
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
    let config = SimConfig {
        amqp_url: a.amqp_url,
        exchange: a.exchange,
        sensors: a.sensors,
        rate: a.rate,
        count: a.count,
        seed: a.seed,
        first_seq: a.first_seq.unwrap_or_else(epoch_micros),
        out: a.out,
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let stop = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    tracing::info!(first_seq = config.first_seq, "Publishing readings");
    let summary = run(&config, stop).await?;
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}

fn epoch_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_micros() as u64)
}
