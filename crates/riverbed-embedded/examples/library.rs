//! Riverbed as a library: a pipeline built in code with your own processor and your own sink.
//!
//! Orders are appended to the embedded log; a processor of ours computes VAT and refuses
//! orders without an amount (they are dead-lettered with our reason); a sink of ours keeps
//! revenue per model (it could call any API); everything else is Riverbed's: partitions keyed by
//! customer, batching, acknowledgements after the sink committed, retries, dead letters.
//!
//! Run: `cargo run -p riverbed-embedded --example library`

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use riverbed_core::{
    BatchOutcome, Emitter, Failure, KeySpec, Message, Outcome, Pipeline, Processor, Report, Sink,
};
use riverbed_embedded::{DataKind, Durability, EmbeddedLog, Generator, LogSource, Record};

/// Our processing step: adds `vat` to each order; an order without an amount is refused.
struct AddVat {
    rate: f64,
}

impl Processor for AddVat {
    fn name(&self) -> &str {
        "add_vat"
    }

    fn process(
        &mut self,
        mut msg: Message,
        _out: &mut Emitter,
    ) -> Result<Option<Message>, Failure> {
        let body = msg.decode_json()?;
        let amount = body["amount"]
            .as_f64()
            .ok_or_else(|| Failure::new("no_amount", "order has no numeric amount"))?;
        body["vat"] = serde_json::json!((amount * self.rate * 100.0).round() / 100.0);
        msg.reencode();
        Ok(Some(msg))
    }
}

/// Our sink: revenue per model, in memory (a real one would write to a service or database).
#[derive(Default, Clone)]
struct Revenue(Arc<Mutex<BTreeMap<String, f64>>>);

#[async_trait]
impl Sink for Revenue {
    async fn write(&self, batch: &[Message]) -> BatchOutcome {
        let mut totals = self.0.lock().expect("revenue lock");
        let outcomes = batch
            .iter()
            .map(|m| {
                match m
                    .json()
                    .and_then(|j| Some((j["model"].as_str()?, j["amount"].as_f64()?)))
                {
                    Some((model, amount)) => {
                        *totals.entry(model.to_owned()).or_default() += amount;
                        Outcome::Ok
                    }
                    None => Outcome::Permanent(Failure::rejected("order without model")),
                }
            })
            .collect();
        BatchOutcome::Each(outcomes)
    }
}

/// Appends `n` orders (one in 50 without an amount) and runs the pipeline over them.
pub async fn run(dir: &Path, n: u64) -> anyhow::Result<(Report, BTreeMap<String, f64>)> {
    let log = EmbeddedLog::open(dir.join("orders.db"), Durability::Full).await?;
    let mut generator = Generator::new(DataKind::Orders, 42, 10, None);
    let records: Vec<Record> = (0..n)
        .map(|i| {
            let mut r = generator.next_record();
            if i % 50 == 49 {
                let mut v: serde_json::Value =
                    serde_json::from_slice(&r.payload).expect("generated JSON");
                v.as_object_mut().expect("object").remove("amount");
                r.payload = serde_json::to_vec(&v).expect("JSON").into();
            }
            r
        })
        .collect();
    log.append("orders", records).await?;

    let revenue = Revenue::default();
    let report = Pipeline::builder()
        .source(LogSource::open(&log, "orders", "revenue", false).await?)
        .key(KeySpec::JsonPointer("/customer".into()))
        .processor(|_partition| Box::new(AddVat { rate: 0.2 }))
        .sink("revenue", revenue.clone())
        .build()?
        .run(std::future::pending())
        .await?;
    let totals = revenue.0.lock().expect("revenue lock").clone();
    Ok((report, totals))
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (report, totals) = run(dir.path(), 10_000).await?;
    println!(
        "acked {}, dead-lettered {}",
        report.stats.acked, report.stats.dead_lettered
    );
    for (model, total) in totals {
        println!("{model:>10}: {total:>14.2} EUR");
    }
    Ok(())
}
