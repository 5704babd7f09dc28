//! The recipe's pipeline file with every broker name made unique to the run, the queues the
//! test watches the outputs through, and the cleanup that deletes those names again.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use lapin::options::{
    BasicConsumeOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{Connection, ExchangeKind};
use serde_json::Value;

use super::{AMQP, LIMIT, RECIPE};

/// The recipe's file, renamed, in a working directory of its own. Dropping it deletes the
/// queues and exchanges, whether the test passed or not.
pub struct Recipe {
    pub tag: String,
    dir: tempfile::TempDir,
}

/// One message taken from a watched queue, with when it arrived.
#[derive(Debug, Clone)]
pub struct Seen {
    pub at: Instant,
    pub body: Value,
}

/// What the watch queues received so far: aggregates and metrics, in arrival order.
#[derive(Clone, Default)]
pub struct Watched {
    pub aggregates: Arc<Mutex<Vec<Seen>>>,
    pub metrics: Arc<Mutex<Vec<Seen>>>,
}

impl Recipe {
    pub fn new() -> Recipe {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        Recipe {
            tag: format!("rbt_sensor_{}_{nanos}", std::process::id()),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Where the pipeline runs (its SQLite state lands here).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The renamed name of the recipe's `sensors.<name>` (queue or exchange).
    pub fn name(&self, name: &str) -> String {
        format!("{}.{name}", self.tag)
    }

    /// The recipe's `pipeline.toml`, renamed, written to the working directory.
    pub fn pipeline(&self) -> PathBuf {
        let text = std::fs::read_to_string(Path::new(RECIPE).join("pipeline.toml")).unwrap();
        let path = self.dir().join("pipeline.toml");
        std::fs::write(&path, rename(&text, &self.tag)).unwrap();
        path
    }

    /// Declares the output exchanges as the recipe does, binds a queue of the test's to each
    /// and consumes both into the returned log.
    pub async fn watch(&self) -> (Watched, Connection) {
        let conn = Connection::connect(AMQP, Default::default()).await.unwrap();
        let watched = Watched::default();
        for (exchange, kind, key, log) in [
            (
                "aggregates",
                ExchangeKind::Topic,
                "#",
                watched.aggregates.clone(),
            ),
            ("metrics", ExchangeKind::Fanout, "", watched.metrics.clone()),
        ] {
            let ch = conn.create_channel().await.unwrap();
            let (exchange, queue) = (self.name(exchange), self.name(&format!("watch.{exchange}")));
            let durable = ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            };
            ch.exchange_declare(
                exchange.as_str().into(),
                kind,
                durable,
                FieldTable::default(),
            )
            .await
            .unwrap();
            ch.queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
            ch.queue_bind(
                queue.as_str().into(),
                exchange.as_str().into(),
                key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
            let no_ack = BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            };
            let mut consumer = ch
                .basic_consume(
                    queue.as_str().into(),
                    "watch".into(),
                    no_ack,
                    FieldTable::default(),
                )
                .await
                .unwrap();
            tokio::spawn(async move {
                let _ch = ch;
                while let Some(Ok(d)) = consumer.next().await {
                    let body = serde_json::from_slice(&d.data).expect("a JSON message");
                    log.lock().unwrap().push(Seen {
                        at: Instant::now(),
                        body,
                    });
                }
            });
        }
        (watched, conn)
    }

    /// Deletes the aggregates exchange under the running pipeline: its publishes fail (the
    /// broker closes their channels), so the readings behind them stay unacknowledged while
    /// the SQLite state goes on committing their snapshots.
    pub async fn cut_aggregates(&self, conn: &Connection) {
        let ch = conn.create_channel().await.unwrap();
        ch.exchange_delete(
            self.name("aggregates").as_str().into(),
            ExchangeDeleteOptions::default(),
        )
        .await
        .unwrap();
    }

    /// Declares the aggregates exchange again and binds the watch queue to it.
    pub async fn rebind_aggregates(&self, conn: &Connection) {
        let ch = conn.create_channel().await.unwrap();
        let (exchange, queue) = (self.name("aggregates"), self.name("watch.aggregates"));
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        ch.exchange_declare(
            exchange.as_str().into(),
            ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await
        .unwrap();
        ch.queue_bind(
            queue.as_str().into(),
            exchange.as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    }

    /// The readings counted in the SQLite state, over all sensors.
    pub async fn stored_count(&self) -> u64 {
        let url = format!(
            "sqlite://{}",
            self.dir().join(format!("{}-state.db", self.tag)).display()
        );
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        let n: i64 = sqlx::query_scalar("SELECT COALESCE(SUM(count), 0) FROM sensor_aggregates")
            .fetch_one(&pool)
            .await
            .unwrap();
        pool.close().await;
        n as u64
    }

    /// Waits until the pipeline declared and bound its queue, so that no reading is returned.
    pub async fn wait_queue(&self, conn: &Connection) {
        let queue = self.name("readings");
        let deadline = Instant::now() + LIMIT;
        loop {
            let ch = conn.create_channel().await.unwrap();
            let passive = QueueDeclareOptions {
                passive: true,
                ..Default::default()
            };
            if ch
                .queue_declare(queue.as_str().into(), passive, FieldTable::default())
                .await
                .is_ok()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "queue {queue} was never declared"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Recipe {
    fn drop(&mut self) {
        let tag = self.tag.clone();
        // A thread and runtime of its own: this may run while the test's runtime unwinds.
        let cleaned = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async { tokio::time::timeout(LIMIT, delete_everything(&tag)).await })
        })
        .join();
        if !matches!(cleaned, Ok(Ok(()))) {
            eprintln!("cleaning up after {} did not finish", self.tag);
        }
    }
}

/// Deletes every queue and exchange named with `tag` (missing ones are fine).
async fn delete_everything(tag: &str) {
    let Ok(conn) = Connection::connect(AMQP, Default::default()).await else {
        return;
    };
    for queue in [
        "control",
        "readings",
        "readings.dlq",
        "watch.aggregates",
        "watch.metrics",
    ] {
        if let Ok(ch) = conn.create_channel().await {
            let q = format!("{tag}.{queue}");
            let _ = ch
                .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
    }
    for exchange in ["readings", "aggregates", "metrics"] {
        if let Ok(ch) = conn.create_channel().await {
            let e = format!("{tag}.{exchange}");
            let _ = ch
                .exchange_delete(e.as_str().into(), ExchangeDeleteOptions::default())
                .await;
        }
    }
    let _ = conn.close(200, "OK".into()).await;
}

/// Renames the recipe's queues, exchanges and client names with `tag`, then checks that no
/// name of the recipe is left: a name added to the recipe later must follow the same pattern,
/// or runs would share it.
fn rename(text: &str, tag: &str) -> String {
    let text = text
        .replace("\"sensors.", &format!("\"{tag}."))
        .replace("\"sensors-", &format!("\"{tag}-"));
    // Line numbers only: the lines may hold credentials.
    let stale: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim_start().starts_with('#') && l.contains("sensors"))
        .map(|(i, _)| i + 1)
        .collect();
    assert!(
        stale.is_empty(),
        "a recipe name was not renamed on lines {stale:?}"
    );
    text
}
