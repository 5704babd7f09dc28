//! The runtime's own ceiling: an in-memory source cycling prebuilt messages into a no-op sink.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use riverbed_core::{
    Acker, Delivery, KeySpec, Message, NoopSink, Pipeline, Settled, Source, SourceError,
};

use super::{Ctx, Params, Scenario, no_prepare};
use crate::measure::timed;

/// Delivers `count` messages cycling over a small pool of prebuilt ones (memory stays flat).
pub struct CycleSource {
    pool: Vec<Message>,
    sent: u64,
    count: u64,
    acker: Arc<CountAcker>,
}

#[derive(Default)]
struct CountAcker(AtomicU64);

impl Acker for CountAcker {
    fn settle(&self, settled: Vec<Settled>) {
        self.0.fetch_add(settled.len() as u64, Ordering::Relaxed);
    }
}

impl CycleSource {
    /// Cycles over `pool` until `count` messages were delivered.
    pub fn from_pool(pool: Vec<Message>, count: u64) -> Self {
        CycleSource {
            pool,
            sent: 0,
            count,
            acker: Arc::default(),
        }
    }

    fn new(count: u64) -> Self {
        let pool = (0..4096u64)
            .map(|i| {
                let key = format!("sensor-{}", i % 64);
                let payload = format!(
                    r#"{{"reading_id":"r-{i}","sensor_id":"{key}","value":{}.5,"unit":"C"}}"#,
                    i % 40
                );
                Message::new(Bytes::from(payload)).with_key(key)
            })
            .collect();
        Self::from_pool(pool, count)
    }
}

#[async_trait]
impl Source for CycleSource {
    fn describe(&self) -> String {
        "in-memory cycle".into()
    }

    async fn recv(&mut self, out: &mut Vec<Delivery>, max: usize) -> Result<bool, SourceError> {
        let n = (self.count - self.sent).min(max as u64);
        if n == 0 {
            return Ok(false);
        }
        for _ in 0..n {
            let message = self.pool[(self.sent % self.pool.len() as u64) as usize].clone();
            out.push(Delivery {
                message,
                token: self.sent,
            });
            self.sent += 1;
        }
        Ok(true)
    }

    fn acker(&self) -> Arc<dyn Acker> {
        self.acker.clone()
    }

    fn dead_letters(&self) -> Option<Arc<dyn riverbed_core::DeadLetterSink>> {
        Some(Arc::new(riverbed_embedded::LogOnlyDeadLetters))
    }
}

async fn run_noop(ctx: Ctx, key: KeySpec) -> anyhow::Result<crate::measure::Sample> {
    timed(|| async move {
        let report = Pipeline::builder()
            .source(CycleSource::new(ctx.messages()))
            .key(key)
            .sink("noop", NoopSink)
            .build()?
            .run(std::future::pending())
            .await?;
        anyhow::ensure!(
            report.stats.acked == ctx.messages(),
            "acked {} of {}",
            report.stats.acked,
            ctx.messages()
        );
        Ok(report.stats.acked)
    })
    .await
}

/// The runtime scenarios.
pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "runtime-noop",
            what: "in-memory source -> runtime (default partitions, keyed by the source) -> no-op sink",
            ceiling: None,
            baseline: None,
            params: Params::DEFAULT,
            prepare: no_prepare,
            run: |ctx| Box::pin(run_noop(ctx, KeySpec::Source)),
            latency: false,
        },
        Scenario {
            name: "runtime-noop-json-key",
            what: "same, key extracted from the JSON payload (/sensor_id): one JSON decode per message",
            ceiling: Some("runtime-noop"),
            baseline: None,
            params: Params::DEFAULT,
            latency: false,
            prepare: no_prepare,
            run: |ctx| Box::pin(run_noop(ctx, KeySpec::JsonPointer("/sensor_id".into()))),
        },
    ]
}
