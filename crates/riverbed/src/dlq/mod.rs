//! `riverbed dlq`: list, show, redrive and purge dead letters, of a pipeline's RabbitMQ
//! dead-letter queue or of an embedded log's dead-letter table.
//!
//! The target is a pipeline file (`*.toml`: its dead letters are found the way `riverbed run`
//! stores them) or an embedded log file (anything else).

mod amqp;
mod embedded;
mod select;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use riverbed_amqp::{DeadLetterQueue, RedriveTarget, Redriver};

use crate::config::raw::{DeadLetterKind, SourceKind};
use crate::config::{self, ClusterPlan, Plan};
pub use select::SelectArgs;
use select::Selection;

/// Dead-letter commands.
#[derive(Debug, clap::Subcommand)]
pub enum DlqCommand {
    /// List dead letters, oldest first, one JSON object per line (payloads cut at 200
    /// characters). Letters are not consumed.
    List {
        /// A pipeline file (`*.toml`) or an embedded log file.
        #[arg(value_name = "PIPELINE_OR_LOG")]
        file: PathBuf,
        #[command(flatten)]
        select: SelectArgs,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Print every dead letter with this id in full (headers, whole payload), as JSON.
    Show {
        /// A pipeline file (`*.toml`) or an embedded log file.
        #[arg(value_name = "PIPELINE_OR_LOG")]
        file: PathBuf,
        /// The letter's id, as `list` prints it.
        id: String,
        /// Embedded logs: only this topic.
        #[arg(long)]
        topic: Option<String>,
    },
    /// Send dead letters back where they came from (all, or the selected ones); a letter
    /// leaves the dead-letter queue only after the broker confirmed its copy.
    Redrive {
        /// A pipeline file (`*.toml`) or an embedded log file.
        #[arg(value_name = "PIPELINE_OR_LOG")]
        file: PathBuf,
        /// Only letters with these ids.
        ids: Vec<String>,
        #[command(flatten)]
        select: SelectArgs,
        /// RabbitMQ: send each letter to its original exchange and routing key (every queue
        /// bound there gets a copy) instead of the pipeline's queue.
        #[arg(long)]
        via_exchange: bool,
        /// RabbitMQ: letters sent before waiting for their confirms; an interruption may leave
        /// up to this many both redriven and still in the dead-letter queue.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..))]
        batch: u16,
    },
    /// Delete dead letters for good (all, or the selected ones).
    Purge {
        /// A pipeline file (`*.toml`) or an embedded log file.
        #[arg(value_name = "PIPELINE_OR_LOG")]
        file: PathBuf,
        /// Only letters with these ids.
        ids: Vec<String>,
        #[command(flatten)]
        select: SelectArgs,
        /// Confirms the deletion.
        #[arg(long)]
        yes: bool,
    },
}

/// Where a pipeline's (or a log's) dead letters are.
enum Store {
    /// An embedded log's table; `topic` when the pipeline names it.
    Embedded { log: PathBuf, topic: Option<String> },
    /// A RabbitMQ queue, and where its letters are redriven to.
    Amqp {
        queue: DeadLetterQueue,
        redriver: Box<Redriver>,
    },
}

/// Runs a dead-letter command.
pub async fn run(cmd: DlqCommand) -> Result<()> {
    let now = select::now_ms();
    match cmd {
        DlqCommand::List {
            file,
            select,
            limit,
        } => {
            let s = Selection::parse(&select, &[], now)?;
            match store(&file, false, select.topic.as_deref())? {
                Store::Embedded { log, topic } => {
                    embedded::list(&log, topic_of(&select.topic, topic), &s, limit).await
                }
                Store::Amqp { queue, .. } => amqp::list(&queue, &s, limit).await,
            }
        }
        DlqCommand::Show { file, id, topic } => {
            let s = Selection {
                ids: vec![id.clone()],
                ..Selection::default()
            };
            match store(&file, false, topic.as_deref())? {
                Store::Embedded { log, topic: t } => {
                    embedded::show(&log, topic_of(&topic, t), &id).await
                }
                Store::Amqp { queue, .. } => amqp::show(&queue, &s, &id).await,
            }
        }
        DlqCommand::Redrive {
            file,
            ids,
            select,
            via_exchange,
            batch,
        } => {
            let s = Selection::parse(&select, &ids, now)?;
            match store(&file, via_exchange, select.topic.as_deref())? {
                Store::Embedded { log, topic } => {
                    embedded::redrive(&log, topic_of(&select.topic, topic), &s).await
                }
                Store::Amqp { queue, redriver } => {
                    amqp::redrive(&queue, &redriver, &s, usize::from(batch)).await
                }
            }
        }
        DlqCommand::Purge {
            file,
            ids,
            select,
            yes,
        } => {
            let s = Selection::parse(&select, &ids, now)?;
            if !yes {
                bail!("purge deletes dead letters for good: add --yes to go ahead");
            }
            match store(&file, false, select.topic.as_deref())? {
                Store::Embedded { log, topic } => {
                    embedded::purge(&log, topic_of(&select.topic, topic), &s).await
                }
                Store::Amqp { queue, .. } => amqp::purge(&queue, &s).await,
            }
        }
    }
}

/// `--topic`, else the pipeline's.
fn topic_of(arg: &Option<String>, pipeline: Option<String>) -> Option<String> {
    arg.clone().or(pipeline)
}

/// Where the dead letters of `file` are: a pipeline file's (`*.toml`), or an embedded log.
/// `--topic` only means something for an embedded log.
fn store(file: &Path, via_exchange: bool, topic: Option<&str>) -> Result<Store> {
    if file.extension().is_none_or(|e| e != "toml") {
        return Ok(Store::Embedded {
            log: file.to_owned(),
            topic: None,
        });
    }
    let plan = config::load(file)?;
    let store = pipeline_store(&plan, via_exchange)
        .with_context(|| format!("finding the dead letters of {}", file.display()))?;
    if let (Store::Amqp { queue, .. }, Some(t)) = (&store, topic) {
        bail!(
            "--topic {t}: topics are for embedded logs; {} keeps its dead letters in RabbitMQ \
             queue `{}`",
            file.display(),
            queue.queue()
        );
    }
    Ok(store)
}

/// The dead-letter destination `riverbed run` gives `plan`, and where letters go back to.
fn pipeline_store(plan: &Plan, via_exchange: bool) -> Result<Store> {
    let source = match &plan.source {
        SourceKind::Amqp(a) => Some(a),
        _ => None,
    };
    let queue = match (&plan.dead_letter, &plan.source) {
        (Some(DeadLetterKind::Embedded(e)), _) => {
            return Ok(Store::Embedded {
                log: e.path.clone(),
                topic: Some(e.topic.clone()),
            });
        }
        (None, SourceKind::Embedded(e)) => {
            return Ok(Store::Embedded {
                log: e.path.clone(),
                topic: Some(e.topic.clone()),
            });
        }
        (Some(DeadLetterKind::Amqp(a)), _) => DeadLetterQueue::new((**a).clone())?,
        (None, SourceKind::Amqp(a)) => DeadLetterQueue::of_source((**a).clone())?,
        (Some(other), _) => bail!(
            "its dead letters go to a `{}` destination; `riverbed dlq` reads RabbitMQ \
             dead-letter queues and embedded logs",
            kind_name(other)
        ),
        (None, _) => bail!(
            "its source keeps no dead letters of its own and it has no `[dead_letter]` section"
        ),
    };
    let redriver = match source {
        Some(a) => {
            let target = match &plan.cluster {
                _ if via_exchange => RedriveTarget::Original,
                Some(ClusterPlan::Partitioned(_)) => RedriveTarget::Exchange(a.queue.clone()),
                _ if a.queue.is_empty() => RedriveTarget::Original,
                _ => RedriveTarget::Queue(a.queue.clone()),
            };
            Redriver::for_source((**a).clone(), target)?
        }
        None => Redriver::on_broker_of(&queue, RedriveTarget::Original),
    };
    Ok(Store::Amqp {
        queue,
        redriver: Box::new(redriver),
    })
}

fn kind_name(k: &DeadLetterKind) -> &'static str {
    match k {
        DeadLetterKind::Embedded(_) => "embedded",
        DeadLetterKind::File(_) => "file",
        DeadLetterKind::Log(_) => "log",
        DeadLetterKind::Amqp(_) => "amqp",
        DeadLetterKind::Nats(_) => "nats",
    }
}

/// A payload as JSON: its text (cut at `limit` characters, with `…`), or its bytes in hex when
/// it is not UTF-8; with its size.
fn payload_fields(
    payload: &[u8],
    limit: Option<usize>,
) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    m.insert("payload_bytes".into(), payload.len().into());
    match std::str::from_utf8(payload) {
        Ok(text) => {
            let cut = limit
                .and_then(|l| text.char_indices().nth(l))
                .map(|(i, _)| i);
            let shown = match cut {
                Some(i) => format!("{}…", &text[..i]),
                None => text.to_owned(),
            };
            m.insert("payload".into(), shown.into());
        }
        Err(_) => {
            let bytes = limit.map_or(payload, |l| &payload[..payload.len().min(l / 2)]);
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            m.insert("payload_hex".into(), hex.into());
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_cut_on_a_character_and_binary_is_hex() {
        let m = payload_fields("héllo wörld".as_bytes(), Some(4));
        assert_eq!(m["payload"], "héll…");
        assert_eq!(m["payload_bytes"], 13);
        assert_eq!(payload_fields(b"short", Some(200))["payload"], "short");
        assert_eq!(payload_fields(&[0xff, 0x00], None)["payload_hex"], "ff00");
    }

    #[test]
    fn a_pipeline_finds_its_dead_letters_like_the_daemon() {
        let amqp = "[source]\nkind = \"amqp\"\nurls = [\"amqp://u:secret@127.0.0.1:5672/%2f\"]\nqueue = \"orders\"\n\
                    [[sinks]]\nname = \"out\"\nkind = \"noop\"\n";
        let plan = config::load_str(amqp).unwrap();
        let Store::Amqp { queue, redriver } = pipeline_store(&plan, false).unwrap() else {
            panic!("a RabbitMQ source keeps its letters in its queue")
        };
        assert_eq!(queue.queue(), "orders.dlq");
        assert_eq!(redriver.target(), &RedriveTarget::Queue("orders".into()));
        let Store::Amqp { redriver, .. } = pipeline_store(&plan, true).unwrap() else {
            panic!()
        };
        assert_eq!(redriver.target(), &RedriveTarget::Original);

        let partitioned = format!("[cluster]\nmode = \"partitioned\"\npartitions = 2\n{amqp}")
            .replace("[source]", "[pipeline]\nkey = \"routing_key\"\n[source]");
        let plan = config::load_str(&partitioned).unwrap();
        let Store::Amqp { redriver, .. } = pipeline_store(&plan, false).unwrap() else {
            panic!()
        };
        assert_eq!(redriver.target(), &RedriveTarget::Exchange("orders".into()));

        let file = "[source]\nkind = \"generate\"\ncount = 1\n[[sinks]]\nname = \"out\"\nkind = \"noop\"\n\
                    [dead_letter]\nkind = \"file\"\npath = \"x.jsonl\"\n";
        let e = pipeline_store(&config::load_str(file).unwrap(), false)
            .err()
            .unwrap();
        assert!(e.to_string().contains("`file` destination"), "{e}");
    }
}
