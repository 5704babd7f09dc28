//! The recipe's files (RabbitMQ or NATS) with every broker and database name made unique to
//! the run, and the cleanup that deletes those names again.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sqlx::PgPool;

use super::service::{Service, exit};
use super::{AMQP, LIMIT, NATS, PG, RECIPE};

/// The broker a run of the recipe uses: its files are in the recipe's folder (RabbitMQ) or in
/// its `nats/` folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broker {
    RabbitMq,
    Nats,
}

impl Broker {
    /// The folder of the broker's files.
    pub fn dir(self) -> PathBuf {
        match self {
            Broker::RabbitMq => PathBuf::from(RECIPE),
            Broker::Nats => Path::new(RECIPE).join("nats"),
        }
    }
}

/// The recipe's files, renamed, in a working directory of their own. Dropping it deletes the
/// queues and exchange (or streams), the tables and the stored offsets, whether the test
/// passed or not.
pub struct Recipe {
    pub tag: String,
    pub broker: Broker,
    /// The NATS server the files point at (the recipe's, unless a test runs its own).
    pub nats: String,
    dir: tempfile::TempDir,
}

impl Recipe {
    pub fn new(broker: Broker) -> Recipe {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        Recipe {
            tag: format!("rbt_orders_{}_{nanos}", std::process::id()),
            broker,
            nats: NATS.to_owned(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// The same, with the NATS files pointing at the server at `url`.
    pub fn on_nats_server(mut self, url: &str) -> Recipe {
        self.nats = url.to_owned();
        self
    }

    /// Where the services run (relative paths of the recipe land here).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The queue of `service` (`billing`, `production`, `history`).
    pub fn queue(&self, service: &str) -> String {
        format!("{}.{service}", self.tag)
    }

    /// The table of `service`.
    pub fn table(&self, service: &str) -> String {
        format!("{}_{service}", self.tag)
    }

    /// The connection name of `service` on the broker and PostgreSQL (also the history's
    /// offsets consumer, and the durable consumer on NATS).
    pub fn client(&self, service: &str) -> String {
        format!("{}-{service}", self.tag)
    }

    /// The recipe's `file`, renamed and edited, written as `as_name`.
    pub fn write(&self, file: &str, as_name: &str, edit: impl FnOnce(String) -> String) -> PathBuf {
        let text = std::fs::read_to_string(self.broker.dir().join(file)).unwrap();
        let path = self.dir().join(as_name);
        let mut text = rename(&text, &self.tag);
        if self.broker == Broker::Nats {
            assert!(text.contains(NATS), "{file} names the server {NATS}");
            text = text.replace(NATS, &self.nats);
        }
        std::fs::write(&path, edit(text)).unwrap();
        path
    }

    /// A service's file, renamed.
    pub fn service(&self, service: &str) -> PathBuf {
        let file = format!("{service}.toml");
        self.write(&file, &file, |text| text)
    }

    /// One publisher run's file: `count` orders after the first `skip` of the sequence.
    pub fn publisher(&self, skip: u64, count: u64) -> PathBuf {
        self.write(
            "publisher.toml",
            &format!("publisher-{skip}.toml"),
            |text| {
                let batch = "count = 200\nskip = 0\n";
                assert!(text.contains(batch), "the publisher's batch lines moved");
                text.replace(batch, &format!("count = {count}\nskip = {skip}\n"))
            },
        )
    }

    /// Runs the publisher to its end and checks that the broker confirmed every order.
    pub async fn publish(&self, skip: u64, count: u64) {
        let file = self.publisher(skip, count);
        let (status, summary) = Service::start(self, "publisher", &file).finish().await;
        assert!(status.success(), "publisher exited with {status}");
        assert_eq!(summary["acked"], count, "every order confirmed: {summary}");
        assert_eq!(summary["dead_lettered"], 0, "{summary}");
    }

    /// Runs `riverbed ARGS` to its end in the working directory; returns its standard output.
    pub async fn riverbed(&self, args: &[&str]) -> String {
        let mut child = Command::new(env!("CARGO_BIN_EXE_riverbed"))
            .args(args)
            .current_dir(self.dir())
            .env("RIVERBED_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let status = exit(&mut child, LIMIT).await;
        let out = std::io::read_to_string(child.stdout.take().unwrap()).unwrap();
        let err = std::io::read_to_string(child.stderr.take().unwrap()).unwrap();
        assert!(status.success(), "riverbed {args:?}: {status}\n{out}{err}");
        out
    }
}

impl Drop for Recipe {
    fn drop(&mut self) {
        let (tag, broker, nats) = (self.tag.clone(), self.broker, self.nats.clone());
        // A thread and runtime of its own: this may run while the test's runtime unwinds.
        let cleaned = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    tokio::time::timeout(LIMIT, delete_everything(&tag, broker, &nats)).await
                })
        })
        .join();
        if !matches!(cleaned, Ok(Ok(()))) {
            eprintln!("cleaning up after {} did not finish", self.tag);
        }
    }
}

/// Deletes every queue, exchange (or stream), table and offset row named with `tag` (missing
/// ones are fine).
async fn delete_everything(tag: &str, broker: Broker, nats: &str) {
    match broker {
        Broker::RabbitMq => delete_rabbitmq(tag).await,
        Broker::Nats => delete_streams(tag, nats).await,
    }
    if let Ok(pool) = PgPool::connect(PG).await {
        for service in ["billing", "production", "history"] {
            let drop = format!("DROP TABLE IF EXISTS {tag}_{service}");
            let _ = sqlx::query(sqlx::AssertSqlSafe(drop)).execute(&pool).await;
        }
        let _ = sqlx::query("DELETE FROM riverbed_offsets WHERE consumer = $1")
            .bind(format!("{tag}-history"))
            .execute(&pool)
            .await;
        pool.close().await;
    }
}

/// Deletes the stream `tag` and the services' dead-letter streams on the server at `url`.
async fn delete_streams(tag: &str, url: &str) {
    if let Ok(client) = async_nats::connect(url).await {
        let js = async_nats::jetstream::new(client);
        let _ = js.delete_stream(tag).await;
        for service in ["billing", "production", "history"] {
            let _ = js.delete_stream(format!("{tag}-{service}-dlq")).await;
        }
    }
}

/// Deletes the queues, their dead-letter queues and the exchange.
async fn delete_rabbitmq(tag: &str) {
    use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
    if let Ok(conn) = lapin::Connection::connect(AMQP, Default::default()).await {
        for service in ["billing", "production", "history"] {
            for queue in [format!("{tag}.{service}"), format!("{tag}.{service}.dlq")] {
                if let Ok(ch) = conn.create_channel().await {
                    let _ = ch
                        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                        .await;
                }
            }
        }
        if let Ok(ch) = conn.create_channel().await {
            let _ = ch
                .exchange_delete(tag.into(), ExchangeDeleteOptions::default())
                .await;
        }
        let _ = conn.close(200, "OK".into()).await;
    }
}

/// Renames the recipe's queues, exchange, streams, subjects, tables, client names and database
/// with `tag`, then checks that no name of the recipe is left: a name added to the recipe later
/// must be added here too, or runs would share it.
fn rename(text: &str, tag: &str) -> String {
    let mut text = text.to_owned();
    for service in ["billing", "production", "history", "publisher"] {
        for (from, to) in [
            (
                format!("\"orders.{service}\""),
                format!("\"{tag}.{service}\""),
            ),
            // Connection names, durables and dead-letter streams (`orders-billing-dlq`).
            (format!("\"orders-{service}"), format!("\"{tag}-{service}")),
            (
                format!("\"{service}_orders\""),
                format!("\"{tag}_{service}\""),
            ),
        ] {
            text = text.replace(&from, &to);
        }
    }
    for (from, to) in [
        ("exchange = \"orders\"", format!("exchange = \"{tag}\"")),
        (
            "{ name = \"orders\", kind",
            format!("{{ name = \"{tag}\", kind"),
        ),
        ("127.0.0.1:5432/shop\"", "127.0.0.1:5432/test\"".to_owned()),
        ("stream = \"orders\"", format!("stream = \"{tag}\"")),
        ("\"orders.>\"", format!("\"{tag}.>\"")),
        ("\"orders.{key}\"", format!("\"{tag}.{{key}}\"")),
    ] {
        text = text.replace(from, &to);
    }
    for stale in ["\"orders", "_orders\"", "/shop\""] {
        // Line numbers only: the lines may hold credentials.
        let lines: Vec<usize> = text
            .lines()
            .enumerate()
            .filter(|(_, l)| l.replace("data = \"orders\"", "").contains(stale))
            .map(|(i, _)| i + 1)
            .collect();
        assert!(
            lines.is_empty(),
            "a recipe name ({stale}) was not renamed on lines {lines:?}"
        );
    }
    text
}
