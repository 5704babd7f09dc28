//! `riverbed declare`: create the broker topology of pipeline files before anything runs.
//!
//! An exchange drops what it cannot route. When a publisher starts before the services that
//! consume its messages, their queues do not exist yet and the first messages would be lost
//! (or, with `mandatory`, dead-lettered). Declaring every queue and binding first, from the
//! services' own files, makes each message published from then on wait in every queue meant
//! for it, however late its consumer starts. On NATS the same holds for JetStream streams: a
//! subject no stream captures stores nothing, so each NATS source's stream (and dead-letter
//! stream) is created first; the stream keeps every message for durables created later.

use std::path::PathBuf;

use anyhow::{Context, Result};
use riverbed_amqp::{AmqpDeadLetters, AmqpSink};
use riverbed_core::Sink;

use crate::config::raw::{DeadLetterKind, SourceKind};
use crate::config::{self, ClusterPlan, Plan, SinkPlanKind};

/// Checks every file first (a bad file declares nothing), then declares each one's source
/// queue with its exchanges, bindings and dead-letter queue, its sinks' exchanges and its
/// dead-letter queue, printing one line per file.
pub async fn run(files: &[PathBuf]) -> Result<()> {
    let plans = files
        .iter()
        .map(|f| config::load(f))
        .collect::<Result<Vec<_>>>()?;
    for (file, plan) in files.iter().zip(&plans) {
        let declared = declare(plan)
            .await
            .with_context(|| format!("declaring the topology of {}", file.display()))?;
        let what = if declared.is_empty() {
            "no broker topology".to_owned()
        } else {
            declared.join(", ")
        };
        println!("{}: {what}", file.display());
    }
    Ok(())
}

/// Declares what `plan` uses on RabbitMQ and NATS; returns a description of each thing
/// declared.
async fn declare(plan: &Plan) -> Result<Vec<String>> {
    let mut declared = Vec::new();
    if let SourceKind::Nats(n) = &plan.source {
        // A partitioned source's durables differ per partition; their stream is the same.
        let one = match &plan.cluster {
            Some(ClusterPlan::NatsPartitioned { .. }) => config::nats_partition(n, 0),
            _ => (**n).clone(),
        };
        let source = riverbed_nats::NatsSource::new(one)?;
        let subjects = source.declare().await?;
        declared.push(format!(
            "stream `{}` capturing `{}`",
            n.stream,
            subjects.join("`, `")
        ));
        declared.push(format!(
            "dead-letter subject `{}`",
            source.dead_letter_destination().subject()
        ));
    }
    if let SourceKind::Amqp(a) = &plan.source {
        let source = config::amqp_source(a, plan)?;
        let queue = source.declare().await?;
        let bound: Vec<&str> = a.bindings.iter().map(|b| b.exchange.as_str()).collect();
        declared.push(if bound.is_empty() {
            format!("queue `{queue}`")
        } else {
            format!("queue `{queue}` bound to `{}`", bound.join("`, `"))
        });
        if let Some(dlq) = source.dead_letter_queue() {
            declared.push(format!("dead-letter queue `{}`", dlq.queue()));
        }
    }
    for s in &plan.sinks {
        if let SinkPlanKind::Amqp(a) = &s.kind {
            let sink = AmqpSink::new((**a).clone())?;
            sink.connect().await?;
            let _ = sink.close().await;
            for x in &a.exchanges {
                declared.push(format!("exchange `{}` (sink `{}`)", x.name, s.name));
            }
        }
    }
    if let Some(DeadLetterKind::Amqp(a)) = &plan.dead_letter {
        let letters = AmqpDeadLetters::new((**a).clone())?;
        letters.connect().await?;
        letters.close().await;
        declared.push(format!("dead-letter queue `{}`", letters.queue()));
    }
    Ok(declared)
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNREACHABLE: &str = r#"
[source]
kind = "amqp"
urls = ["amqp://guest:guest@127.0.0.1:1/%2f"]
connect_timeout = "1s"
queue = "orders.billing"

[[sinks]]
name = "out"
kind = "stdout"
"#;

    #[tokio::test]
    async fn every_file_is_checked_before_anything_is_declared() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.toml");
        let bad = dir.path().join("bad.toml");
        std::fs::write(&good, UNREACHABLE).unwrap();
        std::fs::write(&bad, UNREACHABLE.replace("queue =", "queu =")).unwrap();
        let e = format!("{:#}", run(&[good.clone(), bad]).await.unwrap_err());
        assert!(
            e.contains("bad.toml") && e.contains("unknown field `queu`"),
            "the bad file is refused before the good one connects: {e}"
        );
        let e = format!("{:#}", run(&[good]).await.unwrap_err());
        assert!(
            e.contains("declaring the topology of") && e.contains("could not connect"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_file_without_rabbitmq_declares_nothing() {
        let plan = config::load_str(
            "[source]\nkind = \"generate\"\ncount = 1\n[[sinks]]\nname = \"out\"\nkind = \"stdout\"\n",
        )
        .unwrap();
        assert!(declare(&plan).await.unwrap().is_empty());
    }
}
