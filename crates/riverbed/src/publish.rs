//! `riverbed publish PIPELINE FILE`: JSON lines published, with confirms, into what a pipeline
//! consumes, routed by key the way the pipeline partitions: to the consistent-hash exchange of
//! a `partitioned` pipeline with the key as routing key (the same hash RabbitMQ applies to the
//! AMQP sink's `{key}` routing keys), else to the pipeline's queue.

use std::io::BufRead;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use riverbed_amqp::{AmqpSink, AmqpSinkConfig};
use riverbed_core::{KeySpec, Message, Outcome, Sink};

use crate::config::raw::SourceKind;
use crate::config::{self, ClusterPlan, Plan};

/// Arguments of `riverbed publish`.
#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    /// The pipeline file whose source receives the messages.
    pub pipeline: PathBuf,
    /// JSON lines to publish, one message each (`-` for standard input).
    pub file: PathBuf,
    /// The key each message is routed by: a JSON pointer (`/entity`) or a template of them
    /// (`{/entity}:{/id}`). Default: the pipeline's `key` when it is a JSON pointer.
    #[arg(long)]
    pub key: Option<String>,
    /// JSON pointer of the message id (`/id`); without it messages have no id.
    #[arg(long)]
    pub id: Option<String>,
    /// Messages sent before waiting for their confirms.
    #[arg(long, default_value_t = 500)]
    pub batch: usize,
}

/// Where and how the lines go.
struct Route {
    sink: AmqpSink,
    key: Option<String>,
    target: String,
}

/// Publishes every line of `args.file`; fails at the first line that cannot be published,
/// naming it, after everything before it was confirmed.
pub async fn run(args: PublishArgs) -> Result<()> {
    let plan = config::load(&args.pipeline)?;
    let route = route(&plan, args.key.as_deref())?;
    route
        .sink
        .connect()
        .await
        .with_context(|| format!("connecting to publish to {}", route.target))?;
    let lines = read_lines(&args.file)?;
    let bar = crate::progress::bar(lines.len() as u64, "confirmed");
    let mut published = 0usize;
    for chunk in lines.chunks(args.batch.max(1)) {
        let batch = chunk
            .iter()
            .enumerate()
            .map(|(i, text)| message(text, published + i + 1, &route, args.id.as_deref()))
            .collect::<Result<Vec<_>>>()?;
        send(&route.sink, &batch, published).await?;
        published += batch.len();
        bar.set_position(published as u64);
    }
    bar.finish_and_clear();
    let _ = route.sink.close().await;
    println!(
        "{}",
        serde_json::json!({ "published": published, "to": route.target })
    );
    Ok(())
}

fn route(plan: &Plan, key: Option<&str>) -> Result<Route> {
    let SourceKind::Amqp(a) = &plan.source else {
        bail!("`riverbed publish` publishes into an `amqp` source; this pipeline's is another kind")
    };
    let key = match (key, &plan.key) {
        (Some(k), _) => Some(k.to_owned()),
        (None, KeySpec::JsonPointer(p)) => Some(p.clone()),
        (None, _) => None,
    };
    let (exchange, routing_key, target) = match &plan.cluster {
        Some(ClusterPlan::Partitioned(n)) => {
            if key.is_none() {
                bail!(
                    "publishing to a partitioned pipeline needs a key: `--key /pointer` or `--key \"{{/entity}}:{{/id}}\"`"
                )
            }
            let q = &a.queue;
            (
                q.clone(),
                "{key}".to_owned(),
                format!("the consistent-hash exchange `{q}` ({n} partitions)"),
            )
        }
        _ if a.queue.is_empty() => bail!(
            "the pipeline consumes a server-named queue: publish to its exchange with any AMQP client"
        ),
        _ => (
            String::new(),
            a.queue.clone(),
            format!("queue `{}`", a.queue),
        ),
    };
    let mut config: AmqpSinkConfig = serde_json::from_value(serde_json::json!({
        "exchange": exchange,
        "routing_key": routing_key,
    }))
    .context("publisher settings")?;
    config.urls = a.urls.clone();
    config.tls = a.tls.clone();
    config.connection_name = Some("riverbed publish".into());
    Ok(Route {
        sink: AmqpSink::new(config)?,
        key,
        target,
    })
}

fn read_lines(file: &PathBuf) -> Result<Vec<String>> {
    let reader: Box<dyn BufRead> = if file.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
        Box::new(std::io::BufReader::new(f))
    };
    let mut lines = Vec::new();
    for line in reader.lines() {
        let line = line.with_context(|| format!("reading {}", file.display()))?;
        if !line.trim().is_empty() {
            lines.push(line);
        }
    }
    Ok(lines)
}

/// Line `n` as a message keyed like the pipeline keys it.
fn message(text: &str, n: usize, route: &Route, id: Option<&str>) -> Result<Message> {
    let json: serde_json::Value =
        serde_json::from_str(text).with_context(|| format!("line {n} is not JSON"))?;
    let text_at = |pointer: &str, what: &str| -> Result<String> {
        match json.pointer(pointer) {
            Some(serde_json::Value::String(s)) => Ok(s.clone()),
            Some(v @ serde_json::Value::Number(_)) => Ok(v.to_string()),
            _ => bail!("line {n} has no string or number at {pointer} ({what})"),
        }
    };
    let mut m = Message::new(text.to_owned());
    if let Some(template) = &route.key {
        m = m.with_key(key_of(template, &|p| text_at(p, "the key"))?);
    }
    if let Some(pointer) = id {
        m.meta.message_id = Some(text_at(pointer, "--id")?);
    }
    Ok(m)
}

/// The key `template` gives: a bare JSON pointer, or text with `{/pointer}` placeholders.
fn key_of(template: &str, at: &dyn Fn(&str) -> Result<String>) -> Result<String> {
    if template.starts_with('/') {
        return at(template);
    }
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let Some(close) = rest[open..].find('}') else {
            bail!("--key {template}: a `{{` without its `}}`")
        };
        out.push_str(&at(&rest[open + 1..open + close])?);
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Sends `batch` until every message is confirmed; an unroutable or refused message ends the
/// command, one that failed for now is sent again.
async fn send(sink: &AmqpSink, batch: &[Message], before: usize) -> Result<()> {
    let mut pending: Vec<usize> = (0..batch.len()).collect();
    let mut delay = Duration::from_millis(100);
    for _ in 0..30 {
        let messages: Vec<Message> = pending.iter().map(|i| batch[*i].clone()).collect();
        let outcome = sink.write(&messages).await;
        let mut again = Vec::new();
        for (n, i) in pending.iter().enumerate() {
            match outcome.get(n) {
                Outcome::Ok => {}
                Outcome::Permanent(f) => bail!("line {}: {f}", before + i + 1),
                Outcome::Transient(f) | Outcome::Unavailable(f) => {
                    tracing::warn!(line = before + i + 1, error = %f, "Not confirmed; sending again");
                    again.push(*i);
                }
            }
        }
        if again.is_empty() {
            return Ok(());
        }
        pending = again;
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
    bail!(
        "line {}: not confirmed after 30 attempts; everything before it was",
        before + pending[0] + 1
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_from_a_pointer_or_a_template_of_pointers() {
        let json = serde_json::json!({"entity": "order", "id": 7});
        let at = |p: &str| -> Result<String> {
            match json.pointer(p) {
                Some(serde_json::Value::String(s)) => Ok(s.clone()),
                Some(v) => Ok(v.to_string()),
                None => bail!("no {p}"),
            }
        };
        assert_eq!(key_of("/entity", &at).unwrap(), "order");
        assert_eq!(key_of("{/entity}:{/id}", &at).unwrap(), "order:7");
        assert!(key_of("{/entity", &at).is_err());
        assert!(
            key_of("{/missing}", &at)
                .unwrap_err()
                .to_string()
                .contains("/missing")
        );
    }
}
