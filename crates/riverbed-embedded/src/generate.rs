//! Synthetic data for demos and benchmarks: seeded, optionally rate-limited, optionally finite.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use riverbed_core::{Acker, Delivery, Message, Settled, Source, SourceError};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::schema::epoch_ms;
use crate::writer::Record;

/// What kind of data to generate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataKind {
    /// Sensor readings `{reading_id, sensor_id, value, unit, ts}`, keyed by sensor.
    #[default]
    Sensors,
    /// Car orders `{external_id, customer, model, amount, currency, created_at}`, keyed by order.
    Orders,
    /// Ledger transactions `{id, provider, amount, currency, ts}`, keyed by provider.
    Transactions,
}

/// A seeded generator of records. The same seed yields the same keys and values.
#[derive(Debug, Clone)]
pub struct Generator {
    kind: DataKind,
    keys: u32,
    malformed_every: Option<u64>,
    rng: SmallRng,
    next: u64,
}

impl Generator {
    /// Generates `kind` over `keys` distinct keys; every `malformed_every`-th record (if set) is
    /// broken on purpose (alternately not JSON, and JSON without its key field).
    pub fn new(kind: DataKind, seed: u64, keys: u32, malformed_every: Option<u64>) -> Self {
        Generator {
            kind,
            keys: keys.max(1),
            malformed_every: malformed_every.filter(|n| *n > 0),
            rng: SmallRng::seed_from_u64(seed),
            next: 0,
        }
    }

    /// How many records were generated so far.
    pub fn generated(&self) -> u64 {
        self.next
    }

    /// The next record.
    pub fn next_record(&mut self) -> Record {
        let i = self.next;
        self.next += 1;
        let k = self.rng.random_range(0..self.keys);
        let ts = epoch_ms(SystemTime::now());
        let id = match self.kind {
            DataKind::Sensors => format!("r-{i}"),
            DataKind::Orders => format!("ord-{i}"),
            DataKind::Transactions => format!("tx-{i}"),
        };
        let (key, mut value) = match self.kind {
            DataKind::Sensors => {
                let base = 15.0 + (k % 10) as f64;
                let v = ((base + self.rng.random_range(-5.0..5.0)) * 100.0).round() / 100.0;
                let key = format!("sensor-{k}");
                (
                    key.clone(),
                    json!({"reading_id": id, "sensor_id": key, "value": v, "unit": "C", "ts": ts}),
                )
            }
            DataKind::Orders => {
                const MODELS: [&str; 3] = ["edison-s", "edison-x", "edison-3"];
                let amount = self.rng.random_range(20_000..90_000);
                let key = id.clone();
                let model = MODELS[(k % 3) as usize];
                (
                    key.clone(),
                    json!({"external_id": key, "customer": format!("cust-{k}"), "model": model, "amount": amount, "currency": "EUR", "created_at": ts}),
                )
            }
            DataKind::Transactions => {
                let cents: i64 = self.rng.random_range(100..1_000_000);
                let key = format!("provider-{k}");
                (
                    key.clone(),
                    json!({"id": id, "provider": key, "amount": cents as f64 / 100.0, "currency": "EUR", "ts": ts}),
                )
            }
        };
        if let Some(n) = self.malformed_every
            && (i + 1).is_multiple_of(n)
        {
            if (i / n).is_multiple_of(2) {
                return Record::new(Some(key), format!("{{\"broken\": {i}, ")).with_message_id(id);
            }
            let obj = value.as_object_mut().expect("generated objects");
            for field in ["sensor_id", "external_id", "provider"] {
                obj.remove(field);
            }
        }
        Record::new(
            Some(key),
            serde_json::to_vec(&value).expect("JSON serialises"),
        )
        .with_message_id(id)
    }
}

/// A source of generated messages (not durable: acks are only counted). Use it for benchmarks
/// of the runtime, or append generated records to the embedded log for durable demos.
pub struct GenerateSource {
    generator: Generator,
    count: Option<u64>,
    rate: Option<u64>,
    started: Option<tokio::time::Instant>,
    acker: Arc<CountingAcker>,
}

impl GenerateSource {
    /// `count` messages (forever if `None`), at most `rate` per second (unlimited if `None`).
    pub fn new(generator: Generator, count: Option<u64>, rate: Option<u64>) -> Self {
        GenerateSource {
            generator,
            count,
            rate: rate.filter(|r| *r > 0),
            started: None,
            acker: Arc::new(CountingAcker::default()),
        }
    }

    /// How many generated messages were acknowledged.
    pub fn acked(&self) -> Arc<CountingAcker> {
        self.acker.clone()
    }
}

#[async_trait]
impl Source for GenerateSource {
    fn describe(&self) -> String {
        format!("generator ({:?})", self.generator.kind)
    }

    async fn recv(&mut self, out: &mut Vec<Delivery>, max: usize) -> Result<bool, SourceError> {
        let done = self.generator.generated();
        let mut n = match self.count {
            Some(c) if done >= c => return Ok(false),
            Some(c) => max.min((c - done) as usize),
            None => max,
        };
        if let Some(rate) = self.rate {
            let started = *self.started.get_or_insert_with(tokio::time::Instant::now);
            let mut allowed = (started.elapsed().as_secs_f64() * rate as f64) as u64;
            if allowed <= done {
                let wait = Duration::from_secs_f64((done + 1) as f64 / rate as f64);
                tokio::time::sleep_until(started + wait).await;
                allowed = done + 1;
            }
            n = n.min((allowed - done) as usize);
        }
        for _ in 0..n {
            let token = self.generator.generated();
            let r = self.generator.next_record();
            let mut m = Message::new(r.payload);
            m.key = r.key;
            m.meta.position = Some(token);
            m.meta.message_id = r.message_id;
            m.headers = r.headers;
            out.push(Delivery { message: m, token });
        }
        Ok(true)
    }

    fn acker(&self) -> Arc<dyn Acker> {
        self.acker.clone()
    }

    fn dead_letters(&self) -> Option<Arc<dyn riverbed_core::DeadLetterSink>> {
        Some(Arc::new(crate::file::LogOnlyDeadLetters))
    }
}

/// Counts settlements of a source that has nothing to acknowledge to.
#[derive(Debug, Default)]
pub struct CountingAcker {
    settled: AtomicU64,
}

impl CountingAcker {
    /// Settlements so far.
    pub fn settled(&self) -> u64 {
        self.settled.load(Ordering::Relaxed)
    }
}

impl Acker for CountingAcker {
    fn settle(&self, settled: Vec<Settled>) {
        self.settled
            .fetch_add(settled.len() as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_and_malformed_on_schedule() {
        let mut a = Generator::new(DataKind::Sensors, 7, 5, Some(10));
        let mut b = Generator::new(DataKind::Sensors, 7, 5, Some(10));
        let ra: Vec<_> = (0..30).map(|_| a.next_record()).collect();
        let rb: Vec<_> = (0..30).map(|_| b.next_record()).collect();
        assert_eq!(
            ra.iter().map(|r| r.key.clone()).collect::<Vec<_>>(),
            rb.iter().map(|r| r.key.clone()).collect::<Vec<_>>()
        );
        let bad: Vec<usize> = ra
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                serde_json::from_slice::<serde_json::Value>(&r.payload)
                    .map(|v| v.get("sensor_id").is_none())
                    .unwrap_or(true)
            })
            .map(|(i, _)| i)
            .collect();
        assert_eq!(bad, vec![9, 19, 29]);
    }
}
