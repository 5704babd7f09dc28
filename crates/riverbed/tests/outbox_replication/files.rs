//! This run's names, and the recipe's files pointed at them: the consumer (with an arrival
//! log added) and the relay.

use std::path::{Path, PathBuf};

use crate::RECIPE_AMQP;

/// The entity kinds, one source table each.
pub const KINDS: [&str; 3] = ["customer", "order", "invoice"];

/// Names only this run uses.
pub struct Names {
    pub exchange: String,
    pub outbox: String,
    pub sources: String,
    pub replica: String,
    pub arrivals: String,
}

impl Names {
    /// Fresh names.
    pub fn new() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let s = format!("{}_{nanos}", std::process::id());
        Names {
            exchange: format!("outbox_replication_{s}"),
            outbox: format!("outbox_{s}"),
            sources: format!("outbox_src_{s}"),
            replica: format!("outbox_replica_{s}"),
            arrivals: format!("outbox_arrivals_{s}"),
        }
    }

    /// Every table the run creates.
    pub fn tables(&self) -> Vec<String> {
        let mut t: Vec<String> = KINDS
            .iter()
            .map(|k| format!("{}_{k}", self.sources))
            .collect();
        for suffix in ["", "_versions", "_dead_letters"] {
            t.push(format!("{}{suffix}", self.outbox));
        }
        t.extend([self.replica.clone(), self.arrivals.clone()]);
        t
    }
}

fn recipe(file: &str) -> String {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../recipes/replication");
    std::fs::read_to_string(dir.join(file)).unwrap()
}

fn substitute(mut text: String, pairs: &[(&str, String)]) -> String {
    for (from, to) in pairs {
        assert!(text.contains(from), "the recipe has `{from}`");
        text = text.replace(from, to);
    }
    text
}

/// The recipe's consumer pointed at this run's names, with the arrival log as second sink.
pub fn consumer_file(dir: &Path, names: &Names, amqp: &str) -> PathBuf {
    let mut text = substitute(
        recipe("consumer.toml"),
        &[
            (
                "queue = \"replication\"",
                format!("queue = \"{}\"", names.exchange),
            ),
            (
                "dead_letter_queue = \"replication.dlq\"",
                format!("dead_letter_queue = \"{}.dlq\"", names.exchange),
            ),
            (
                "table = \"replicated_entities\"",
                format!("table = \"{}\"", names.replica),
            ),
            ("5432/replica", "5432/test".to_owned()),
            (RECIPE_AMQP, amqp.to_owned()),
        ],
    );
    text.push_str(&crate::arrival_log::arrival_sink(&names.arrivals));
    let path = dir.join("consumer.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The recipe's relay pointed at this run's outbox and exchange.
pub fn relay_file(dir: &Path, names: &Names, amqp: &str) -> PathBuf {
    let text = substitute(
        recipe("producer.toml"),
        &[
            (
                "table = \"replication_outbox\"",
                format!("table = \"{}\"", names.outbox),
            ),
            (
                "exchange = \"replication\"",
                format!("exchange = \"{}\"", names.exchange),
            ),
            ("5432/app", "5432/test".to_owned()),
            (RECIPE_AMQP, amqp.to_owned()),
        ],
    );
    let path = dir.join("relay.toml");
    std::fs::write(&path, text).unwrap();
    path
}
