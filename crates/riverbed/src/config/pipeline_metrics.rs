//! `kind = "pipeline_metrics"`: the pipeline's own figures published to RabbitMQ every period,
//! with publisher confirms: throughput, and the batch write times of every batcher (one sink
//! in one partition). The figures are the core's [`Stats`]; the publishing is the AMQP sink's.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use futures::future::BoxFuture;
use riverbed_amqp::{AmqpSink, AmqpSinkConfig};
use riverbed_core::{Message, Sink, Stats, StatsSnapshot, WriteTimes};
use serde::Deserialize;
use serde_json::{Value, json};

use super::build::Task;

/// `kind = "pipeline_metrics"`: one JSON message per period on a RabbitMQ exchange.
///
/// Each message: `task`, `ts` (epoch milliseconds), `period_ms` (since the previous one),
/// `received` and `acked` in the period, `throughput` (acknowledged deliveries a second over
/// the period), `in_flight`, `totals` (the counters since start), and `batchers`: for each sink
/// and partition that wrote in the period, `batches`, `messages`, and `min_ms`, `max_ms`,
/// `mean_ms` of its batch writes (one sink write of one batch, retries counted apart). A last
/// message goes out when the pipeline stops. A message that is not confirmed is logged and
/// counted (`riverbed_pipeline_metrics_failures_total`); the next period goes on.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineMetricsSection {
    /// How often the figures are published.
    #[serde(default = "default_every", with = "humantime_serde")]
    pub every: Duration,
    /// Where they are published: the AMQP sink's settings (`urls`, `exchange`,
    /// `routing_key`, `exchanges` to declare, `mandatory`...). `{key}` in the routing key is
    /// the task's name.
    pub amqp: AmqpSinkConfig,
}

fn default_every() -> Duration {
    Duration::from_secs(1)
}

impl PipelineMetricsSection {
    /// Connects the publisher now (a refused login shows at start) and returns the task that
    /// samples `stats` every period until its stop future completes.
    pub async fn task(&self, name: &str, stats: Arc<Stats>) -> Result<Task> {
        anyhow::ensure!(
            !self.every.is_zero(),
            "task `{name}`: `every` must be longer than zero"
        );
        let sink =
            AmqpSink::new(self.amqp.clone()).with_context(|| format!("building task `{name}`"))?;
        sink.connect()
            .await
            .with_context(|| format!("connecting task `{name}`"))?;
        let sampler = Sampler {
            name: name.to_owned(),
            stats,
            sink,
            every: self.every,
        };
        Ok(Box::new(move |stop| tokio::spawn(sampler.run(stop))))
    }
}

/// Samples the counters and publishes the difference to the previous sample.
struct Sampler {
    name: String,
    stats: Arc<Stats>,
    sink: AmqpSink,
    every: Duration,
}

impl Sampler {
    async fn run(self, stop: BoxFuture<'static, ()>) {
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        // From zero: the periods' figures add up to the run's totals.
        let mut last = (Instant::now(), StatsSnapshot::default());
        tokio::pin!(stop);
        loop {
            let stopping = tokio::select! {
                _ = &mut stop => true,
                _ = tick.tick() => false,
            };
            let now = (Instant::now(), self.stats.snapshot());
            let body = figures(&self.name, &last, &now, self.stats.take_write_times());
            self.publish(body).await;
            last = now;
            if stopping {
                return;
            }
        }
    }

    async fn publish(&self, body: Value) {
        let mut m = Message::from_json(body).with_key(&self.name);
        m.meta.timestamp = Some(SystemTime::now());
        let outcome = self.sink.write(std::slice::from_ref(&m)).await.get(0);
        if let Some(f) = outcome.failure() {
            metrics::counter!("riverbed_pipeline_metrics_failures_total", "task" => self.name.clone())
                .increment(1);
            tracing::warn!(task = %self.name, error = %f, "Pipeline metrics not published");
        }
    }
}

/// One period's message: counters from `last` to `now`, and the period's write times.
fn figures(
    name: &str,
    last: &(Instant, StatsSnapshot),
    now: &(Instant, StatsSnapshot),
    times: Vec<WriteTimes>,
) -> Value {
    let seconds = now.0.duration_since(last.0).as_secs_f64();
    let acked = now.1.acked - last.1.acked;
    let ms = |s: f64| s * 1000.0;
    let batchers: Vec<Value> = times
        .iter()
        .map(|t| {
            json!({
                "sink": t.sink,
                "partition": t.partition,
                "batches": t.batches,
                "messages": t.messages,
                "min_ms": ms(t.min_seconds),
                "max_ms": ms(t.max_seconds),
                "mean_ms": ms(t.mean_seconds()),
            })
        })
        .collect();
    let epoch_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    json!({
        "task": name,
        "ts": epoch_ms,
        "period_ms": ms(seconds),
        "received": now.1.received - last.1.received,
        "acked": acked,
        "throughput": if seconds > 0.0 { acked as f64 / seconds } else { 0.0 },
        "in_flight": now.1.in_flight(),
        "totals": {
            "received": now.1.received,
            "acked": now.1.acked,
            "dead_lettered": now.1.dead_lettered,
            "retried": now.1.retried,
            "unavailable_waits": now.1.unavailable_waits,
            "batches": now.1.batches,
        },
        "batchers": batchers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_period_reports_its_differences_and_the_batchers_that_wrote() {
        let start = Instant::now();
        let last = StatsSnapshot {
            received: 10,
            acked: 8,
            ..Default::default()
        };
        let now = StatsSnapshot {
            received: 30,
            acked: 28,
            ..Default::default()
        };
        let times = vec![WriteTimes {
            sink: "aggregates".into(),
            partition: 1,
            batches: 4,
            messages: 12,
            min_seconds: 0.001,
            max_seconds: 0.004,
            total_seconds: 0.01,
        }];
        let v = figures(
            "metrics",
            &(start, last),
            &(start + Duration::from_secs(2), now),
            times,
        );
        assert_eq!(v["received"], 20);
        assert_eq!(v["acked"], 20);
        assert_eq!(v["throughput"], 10.0);
        assert_eq!(v["in_flight"], 2);
        assert_eq!(v["totals"]["acked"], 28);
        let b = &v["batchers"][0];
        assert_eq!(
            (b["sink"].as_str(), b["partition"].as_u64()),
            (Some("aggregates"), Some(1))
        );
        assert_eq!(b["min_ms"], 1.0);
        assert_eq!(b["max_ms"], 4.0);
        assert!((b["mean_ms"].as_f64().unwrap() - 2.5).abs() < 1e-9);
    }
}
