//! `riverbed dlq`: list and redrive dead letters of an embedded log.

use std::path::PathBuf;

use anyhow::Result;
use riverbed_embedded::{Durability, EmbeddedLog, list_dead_letters, redrive};

/// Dead-letter commands.
#[derive(Debug, clap::Subcommand)]
pub enum DlqCommand {
    /// List dead letters, oldest first, one JSON object per line.
    List {
        /// The embedded log file.
        #[arg(value_name = "LOG_FILE")]
        file: PathBuf,
        /// Only this topic.
        #[arg(long)]
        topic: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Move dead letters back into their topic (all of the topic's, or the given ids).
    Redrive {
        /// The embedded log file.
        #[arg(value_name = "LOG_FILE")]
        file: PathBuf,
        /// The topic.
        #[arg(long)]
        topic: String,
        /// Only these ids.
        ids: Vec<i64>,
    },
}

/// Runs a dead-letter command.
pub async fn run(cmd: DlqCommand) -> Result<()> {
    match cmd {
        DlqCommand::List { file, topic, limit } => {
            let log = EmbeddedLog::open(&file, Durability::Full).await?;
            for l in list_dead_letters(&log, topic.as_deref(), limit).await? {
                let d = &l.letter;
                println!(
                    "{}",
                    serde_json::json!({
                        "id": l.id,
                        "topic": l.topic,
                        "offset": d.message.meta.position,
                        "key": d.message.key,
                        "reason": d.reason,
                        "error": d.error,
                        "attempts": d.attempts,
                        "stage": d.stage,
                        "payload": String::from_utf8_lossy(&d.message.payload),
                    })
                );
            }
        }
        DlqCommand::Redrive { file, topic, ids } => {
            let log = EmbeddedLog::open(&file, Durability::Full).await?;
            let ids = (!ids.is_empty()).then_some(ids);
            let moved = redrive(&log, &topic, ids).await?;
            println!("redrove {moved} dead letters into {topic}");
        }
    }
    Ok(())
}
