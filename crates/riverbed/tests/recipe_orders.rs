//! The `recipes/orders` recipe end to end, with the real `riverbed` binary and the recipe's own
//! files against RabbitMQ and PostgreSQL: the topology is declared before the first order;
//! billing and production take every order once through a lost connection and a SIGKILL; a
//! service started late bootstraps from the stream, and its restart resumes right after the
//! stored offset; an order no queue takes fails loudly instead of vanishing. The same on NATS
//! JetStream with the files of `recipes/orders/nats/` (the tests whose names hold `nats`).
//!
//! Every broker and database name of the recipe is renamed with a tag unique to the run, so
//! runs and tests never collide; everything is deleted at the end, failed or not.

#[path = "recipe_orders/nats.rs"]
mod nats;
#[path = "recipe_orders/observe.rs"]
mod observe;
#[path = "recipe_orders/recipe.rs"]
mod recipe;
#[path = "recipe_orders/service.rs"]
mod service;

use std::path::{Path, PathBuf};
use std::time::Duration;

use observe::{count, lose_connection, orders, published, stored_offsets, wait_blocked, wait_rows};
use recipe::{Broker, Recipe};
use riverbed_core::testing::TestServer;
use serde_json::Value;
use service::Service;
use sqlx::PgPool;

const PG: &str = "postgres://postgres@127.0.0.1:5432/test";
const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const NATS: &str = "nats://127.0.0.1:4222";
const RECIPE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../recipes/orders");
/// How long any one thing may take (a process exit, rows appearing, a reconnect): longer than
/// the publisher's confirm timeout (30 s), so that a confirm the broker never sends shows as a
/// retried (and deduplicated) order rather than as a publisher that did not exit.
const LIMIT: Duration = Duration::from_secs(45);
/// The recipe publisher's seed and key count (checked below): its orders are known in advance.
const SEED: u64 = 1;
const KEYS: u32 = 20;

/// The tests of this binary share the broker and the database: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn services() -> bool {
    riverbed_core::testing::require_service("RabbitMQ", "127.0.0.1:5672")
        && riverbed_core::testing::require_service("PostgreSQL", "127.0.0.1:5432")
}

fn recipe_text(file: &str) -> String {
    std::fs::read_to_string(Path::new(RECIPE).join(file)).unwrap()
}

const FILES: [&str; 4] = [
    "publisher.toml",
    "billing.toml",
    "production.toml",
    "history.toml",
];

#[tokio::test]
async fn the_recipe_files_validate() {
    let recipe = Recipe::new(Broker::RabbitMq);
    for broker in [Broker::RabbitMq, Broker::Nats] {
        for file in FILES {
            let path = broker.dir().join(file);
            let out = recipe.riverbed(&["validate", path.to_str().unwrap()]).await;
            assert!(out.contains(": ok ("), "{broker:?} {file}: {out}");
        }
    }
    let publisher = recipe_text("publisher.toml");
    for setting in [
        "seed = 1\n",
        "data = \"orders\"\n",
        "mandatory = true ",
        "persistent = true ",
        "kind = \"fanout\"",
    ] {
        assert!(publisher.contains(setting), "publisher.toml: {setting}");
    }
    assert!(!publisher.contains("keys ="), "the default 20 customers");
    assert!(recipe_text("history.toml").contains("partitions = 1 "));
}

/// On NATS only the broker's part differs: the services' `[source]`, the publisher's sinks.
#[test]
fn the_nats_files_differ_from_the_rabbitmq_ones_only_in_the_broker_section() {
    for file in FILES {
        let broker_part = if file == "publisher.toml" {
            "sinks"
        } else {
            "source"
        };
        let parse = |text: &str| text.parse::<toml::Table>().unwrap();
        let mut rabbitmq = parse(&recipe_text(file));
        let nats_text = std::fs::read_to_string(Broker::Nats.dir().join(file)).unwrap();
        let mut nats = parse(&nats_text);
        let part = nats.remove(broker_part).unwrap();
        let kind = match &part {
            toml::Value::Array(sinks) => sinks[0]["kind"].clone(),
            other => other["kind"].clone(),
        };
        assert_eq!(kind.as_str(), Some("nats"), "{file}: {broker_part}");
        rabbitmq.remove(broker_part);
        assert!(rabbitmq == nats, "{file}: the rest is the RabbitMQ file's");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_gets_every_order_once_even_one_started_late() {
    if !services() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let _broker = riverbed_core::testing::lock_service("rabbitmq", false).await;
    let _database = riverbed_core::testing::lock_service("postgres", false).await;
    tokio::time::timeout(Duration::from_secs(120), scenario())
        .await
        .expect("the scenario finishes within two minutes");
}

async fn scenario() {
    let shop = Shop::new(Broker::RabbitMq).await;
    shop.declare_topology().await;
    // 200 orders while no service runs: they wait in both queues and in the stream.
    shop.recipe.publish(0, 200).await;
    let billing = Service::start(&shop.recipe, "billing", &shop.billing);
    let production = Service::start(&shop.recipe, "production", &shop.production);
    shop.wait_rows(&["billing", "production"], 200).await;
    let production = shop.redelivery_and_crash(production).await;
    shop.late_service_bootstraps_and_resumes().await;

    // Billing got the orders of its lost connection twice and wrote them once; production's
    // second run got back exactly what the first never committed (300), and 250 more.
    let summary = billing.stop().await;
    assert!(
        summary["received"].as_u64().unwrap() > 750,
        "billing received orders again after its connection was lost: {summary}"
    );
    let summary = production.stop().await;
    assert_eq!(summary["received"], 550, "{summary}");
    shop.same_orders_everywhere(750).await;
    shop.pool.close().await;
}

/// The renamed recipe, its service files and the database.
struct Shop {
    recipe: Recipe,
    pool: PgPool,
    billing: PathBuf,
    production: PathBuf,
    history: PathBuf,
    /// The NATS server of the test's own, restarted mid-stream (the last field: dropped after
    /// the recipe cleaned up on it).
    nats_server: std::sync::Mutex<Option<TestServer>>,
}

impl Shop {
    async fn new(broker: Broker) -> Shop {
        Shop::of(Recipe::new(broker), None).await
    }

    async fn of(recipe: Recipe, nats_server: Option<TestServer>) -> Shop {
        Shop {
            nats_server: std::sync::Mutex::new(nats_server),
            pool: PgPool::connect(PG).await.unwrap(),
            billing: recipe.service("billing"),
            production: recipe.service("production"),
            history: recipe.service("history"),
            recipe,
        }
    }

    async fn wait_rows(&self, services: &[&str], n: i64) {
        for s in services {
            wait_rows(&self.pool, &self.recipe.table(s), n).await;
        }
    }

    /// The recipe's step 1: both queues and the stream exist, bound to the exchange (on
    /// NATS: the stream and the dead-letter streams), before the first order.
    async fn declare_topology(&self) {
        let publisher = self.recipe.publisher(0, 0);
        let files = [&self.billing, &self.production, &self.history, &publisher];
        let mut args = vec!["declare"];
        args.extend(files.iter().map(|f| f.to_str().unwrap()));
        let declared = self.recipe.riverbed(&args).await;
        let tag = &self.recipe.tag;
        for service in ["billing", "production", "history"] {
            let declared_line = match self.recipe.broker {
                Broker::RabbitMq => {
                    format!("queue `{}` bound to `{tag}`", self.recipe.queue(service))
                }
                Broker::Nats => format!(
                    "stream `{tag}` capturing `{tag}.>`, dead-letter subject \
                     `riverbed.dlq.{tag}.{}`",
                    self.recipe.client(service)
                ),
            };
            assert!(
                declared.contains(&declared_line),
                "{declared_line}: {declared}"
            );
        }
    }

    /// 300 more orders while billing and production run, with both tables locked so that each
    /// holds a write of them in flight: production is SIGKILLed before it commits and starts
    /// again; on RabbitMQ, billing loses its broker connection, which hands the orders back
    /// for redelivery, and commits them after that; on NATS, the server restarts meanwhile
    /// (SIGTERM, then started again on its data). Returns the new production.
    async fn redelivery_and_crash(&self, production: Service) -> Service {
        let (billing_t, production_t) = (
            self.recipe.table("billing"),
            self.recipe.table("production"),
        );
        let mut lock = self.pool.begin().await.unwrap();
        let sql = format!("LOCK TABLE {billing_t}, {production_t} IN SHARE MODE");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut *lock)
            .await
            .unwrap();
        self.recipe.publish(200, 300).await;
        wait_blocked(&self.pool, &self.recipe.client("billing")).await;
        wait_blocked(&self.pool, &self.recipe.client("production")).await;
        production.crash();
        match self.recipe.broker {
            Broker::RabbitMq => lose_connection(&self.recipe.client("billing")).await,
            Broker::Nats => {
                let mut server = self.nats_server.lock().unwrap();
                let server = server
                    .as_mut()
                    .expect("the NATS scenario runs its own server");
                tokio::task::block_in_place(|| server.restart());
            }
        }
        lock.rollback().await.unwrap();
        assert_eq!(
            count(&self.pool, &production_t).await,
            200,
            "production committed nothing of the 300 before it was killed"
        );
        let production = Service::start(&self.recipe, "production", &self.production);
        self.wait_rows(&["billing", "production"], 500).await;
        production
    }

    /// The history service, started after all that: the 500 orders from the stream's first
    /// offset, then 100 live ones; stopped, 100 more published, started again: it resumes
    /// right after the stored offset, then follows 50 more.
    async fn late_service_bootstraps_and_resumes(&self) {
        let history = Service::start(&self.recipe, "history", &self.history);
        self.wait_rows(&["history"], 500).await;
        self.recipe.publish(500, 100).await;
        self.wait_rows(&["billing", "production", "history"], 600)
            .await;
        let summary = history.stop().await;
        assert_eq!(summary["received"], 600, "everything once: {summary}");
        assert_eq!(
            stored_offsets(&self.pool, &self.recipe.client("history")).await,
            (599, 599),
            "the last stream offset is stored with the rows"
        );

        self.recipe.publish(600, 100).await;
        let history = Service::start(&self.recipe, "history", &self.history);
        self.wait_rows(&["history"], 700).await;
        self.recipe.publish(700, 50).await;
        self.wait_rows(&["billing", "production", "history"], 750)
            .await;
        let summary: Value = history.stop().await;
        assert_eq!(
            summary["received"], 150,
            "the restart read exactly the orders after the stored offset: {summary}"
        );
        let sql = format!(
            "SELECT count(DISTINCT stream_offset), min(stream_offset), max(stream_offset) FROM {}",
            self.recipe.table("history")
        );
        let offsets: (i64, i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .fetch_one(&self.pool)
            .await
            .unwrap();
        assert_eq!(offsets, (750, 0, 749), "every stream offset written once");
    }

    /// The three tables hold the same `n` orders, each once, as they were published.
    async fn same_orders_everywhere(&self, n: u64) {
        let expected = published(SEED, KEYS, n);
        let billing = orders(&self.pool, &self.recipe.table("billing")).await;
        assert_eq!(billing.len() as u64, n);
        for (id, (customer, model, amount, currency, _)) in &billing {
            let row = [customer, model, amount, currency].map(String::clone);
            assert_eq!(expected.get(id), Some(&row), "order {id} as published");
        }
        for service in ["production", "history"] {
            let table = orders(&self.pool, &self.recipe.table(service)).await;
            assert!(
                table == billing,
                "{service} holds the same orders as billing"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_no_queue_takes_fails_loudly_instead_of_vanishing() {
    if !services() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let _broker = riverbed_core::testing::lock_service("rabbitmq", false).await;
    let _database = riverbed_core::testing::lock_service("postgres", false).await;
    tokio::time::timeout(Duration::from_secs(60), async {
        let recipe = Recipe::new(Broker::RabbitMq);
        // The seed's trap: the publisher runs before any service's queue was declared.
        let publisher = recipe.publisher(0, 5);
        let declared = recipe
            .riverbed(&["declare", publisher.to_str().unwrap()])
            .await;
        assert!(
            declared.contains(&format!("exchange `{}`", recipe.tag)) && !declared.contains("queue"),
            "only the exchange exists: {declared}"
        );
        let (status, summary) = Service::start(&recipe, "publisher", &publisher)
            .finish()
            .await;
        assert!(status.success(), "the publisher ends normally: {status}");
        assert_eq!(summary["dead_lettered"], 5, "every order failed: {summary}");
        let log = std::fs::read_to_string(recipe.dir().join("publisher.log")).unwrap();
        assert!(
            log.contains("ERROR") && log.contains("unroutable"),
            "each failure is an error in the log:\n{log}"
        );
        assert_eq!(
            dead_letters(&recipe, "unroutable", None),
            ["ord-0", "ord-1", "ord-2", "ord-3", "ord-4"]
        );
    })
    .await
    .expect("the test finishes within a minute");
}

/// The ids of the orders in the publisher's dead-letter file, each checked to have `reason`
/// (and an error starting with `error`, when given).
fn dead_letters(recipe: &Recipe, reason: &str, error: Option<&str>) -> Vec<String> {
    let letters = std::fs::read_to_string(recipe.dir().join("unroutable.jsonl"))
        .expect("the dead letters are kept");
    let mut ids = Vec::new();
    for line in letters.lines() {
        let letter: Value = serde_json::from_str(line).unwrap();
        assert_eq!(letter["reason"], reason, "{letter}");
        if let Some(error) = error {
            let e = letter["error"].as_str().unwrap_or_default();
            assert!(e.starts_with(error), "{letter}");
        }
        let payload: Value = serde_json::from_str(letter["payload"].as_str().unwrap()).unwrap();
        assert_eq!(payload["external_id"], letter["message_id"], "{letter}");
        ids.push(letter["message_id"].as_str().unwrap().to_owned());
    }
    ids.sort();
    ids
}
