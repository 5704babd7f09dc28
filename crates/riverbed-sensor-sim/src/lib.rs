//! A sensor simulator for `recipes/sensors`: sensors send numeric readings to a RabbitMQ topic
//! exchange, each confirmed by the broker before the next one, at a steady rate.
//!
//! # Layout
//! - [`Readings`]: the deterministic sequence of readings a seed gives.
//! - [`run`]: publishes them (publisher confirms, `mandatory`, persistent) until the count is
//!   reached or the stop future completes, and writes each confirmed reading as a JSON line.
//!
//! # Messages (JSON; message id `reading-<seq>`; routing key `reading.<sensor_id>`)
//! `{"sensor_id": "sensor-07", "value": 21.503, "ts": 1764612345678, "seq": 42}`: `seq` counts
//! from `first_seq` over all sensors, so it grows per sensor too; `ts` is the publishing time
//! (epoch milliseconds), the only part the seed does not fix.

#![forbid(unsafe_code)]

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Confirmation, Connection, ConnectionProperties};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The broker (`amqp://user:password@host:port/vhost`).
    pub amqp_url: String,
    /// The topic exchange published to (declared durable).
    pub exchange: String,
    /// How many sensors (`sensor-00` ...).
    pub sensors: u32,
    /// Readings a second, over all sensors.
    pub rate: u32,
    /// Readings in all, then the run ends; without it, until stopped.
    pub count: Option<u64>,
    /// The seed of the sensors chosen and their values.
    pub seed: u64,
    /// The first reading's `seq`; give a later run a higher one, so that its readings are not
    /// taken for redeliveries of the earlier run's.
    pub first_seq: u64,
    /// Where every confirmed reading is appended as a JSON line (none: not written).
    pub out: Option<PathBuf>,
}

/// One reading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    /// The sensor (`sensor-07`).
    pub sensor_id: String,
    /// The measured value (three decimals).
    pub value: f64,
    /// When it was published (epoch milliseconds).
    pub ts: u64,
    /// Its sequence number, growing over all sensors.
    pub seq: u64,
}

/// The readings of a seed, in order: a random sensor each time, its value a random walk
/// around its own base.
pub struct Readings {
    rng: SmallRng,
    last: Vec<f64>,
    next_seq: u64,
}

impl Readings {
    /// The sequence of `sensors` sensors for `seed`, from `first_seq` on.
    pub fn new(seed: u64, sensors: u32, first_seq: u64) -> Self {
        let mut rng = SmallRng::seed_from_u64(seed);
        let last = (0..sensors.max(1))
            .map(|_| rng.random_range(-20.0..40.0))
            .collect();
        Readings {
            rng,
            last,
            next_seq: first_seq,
        }
    }

    /// The next reading, stamped `ts`.
    pub fn next_reading(&mut self, ts: u64) -> Reading {
        let sensor = self.rng.random_range(0..self.last.len());
        let v = self.last[sensor] + self.rng.random_range(-1.0..1.0);
        let value = (v * 1000.0).round() / 1000.0;
        self.last[sensor] = value;
        let seq = self.next_seq;
        self.next_seq += 1;
        Reading {
            sensor_id: format!("sensor-{sensor:02}"),
            value,
            ts,
            seq,
        }
    }
}

/// What a run published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Readings confirmed by the broker.
    pub published: u64,
    /// The `seq` the next run should start from.
    pub next_seq: u64,
}

/// Publishes readings until `config.count` are confirmed or `stop` completes. Each reading is
/// published with `mandatory` and waits for its confirm: a reading no queue takes (the
/// pipeline's queue is not declared yet) stops the run with an error instead of vanishing.
pub async fn run(config: &SimConfig, stop: impl Future<Output = ()>) -> Result<Summary> {
    let connection = Connection::connect(&config.amqp_url, ConnectionProperties::default())
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
            config.exchange.as_str().into(),
            lapin::ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("declaring exchange `{}`", config.exchange))?;
    let mut out = match &config.out {
        Some(path) => Some(std::io::BufWriter::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening {}", path.display()))?,
        )),
        None => None,
    };
    let mut readings = Readings::new(config.seed, config.sensors, config.first_seq);
    let period = Duration::from_secs_f64(1.0 / f64::from(config.rate.max(1)));
    let mut tick = tokio::time::interval(period);
    let options = BasicPublishOptions {
        mandatory: true,
        immediate: false,
    };
    let mut published = 0u64;
    tokio::pin!(stop);
    while config.count.is_none_or(|c| published < c) {
        tokio::select! {
            _ = &mut stop => break,
            _ = tick.tick() => {}
        }
        let r = readings.next_reading(epoch_ms());
        let props = BasicProperties::default()
            .with_message_id(format!("reading-{}", r.seq).into())
            .with_content_type("application/json".into())
            .with_delivery_mode(2);
        let confirm = channel
            .basic_publish(
                config.exchange.as_str().into(),
                format!("reading.{}", r.sensor_id).into(),
                options,
                &serde_json::to_vec(&r)?,
                props,
            )
            .await?
            .await?;
        match confirm {
            Confirmation::Ack(Some(_)) | Confirmation::Nack(Some(_)) => bail!(
                "reading {} was returned: no queue is bound to exchange `{}` (start the \
                 pipeline, or `riverbed declare` its file, first)",
                r.seq,
                config.exchange
            ),
            Confirmation::Nack(None) => bail!("the broker refused reading {}", r.seq),
            Confirmation::Ack(None) | Confirmation::NotRequested => {}
        }
        if let Some(out) = out.as_mut() {
            serde_json::to_writer(&mut *out, &r)?;
            out.write_all(b"\n")?;
        }
        published += 1;
    }
    if let Some(mut out) = out {
        out.flush()?;
    }
    let _ = connection.close(200, "done".into()).await;
    Ok(Summary {
        published,
        next_seq: config.first_seq + published,
    })
}

fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_the_same_readings() {
        let a: Vec<Reading> = {
            let mut r = Readings::new(7, 5, 1);
            (0..50).map(|_| r.next_reading(0)).collect()
        };
        let mut r = Readings::new(7, 5, 1);
        let b: Vec<Reading> = (0..50).map(|_| r.next_reading(0)).collect();
        assert_eq!(a, b);
        assert_eq!(a[0].seq, 1);
        assert_eq!(a[49].seq, 50);
        assert!(a.iter().all(|r| r.sensor_id.starts_with("sensor-0")));
        let mut other = Readings::new(8, 5, 1);
        assert_ne!(
            a[..10],
            (0..10).map(|_| other.next_reading(0)).collect::<Vec<_>>()[..]
        );
    }
}
