//! The real services on 127.0.0.1: availability, connections, the Redis restart (with the guard
//! that brings Redis back), and cleanup of everything a run created, also when it fails.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};

use super::recipe::{Names, Totals, cents};

/// The test database (the recipe's `ledger` database is replaced by it).
pub const PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
/// The test Redis.
pub const REDIS_URL: &str = "redis://127.0.0.1:6379";
/// The test broker (the recipe's own URL).
const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// The locks of a test that uses the broker (shared) and restarts Redis (exclusive), taken
/// in the order every test takes them (RabbitMQ, then Redis).
pub async fn lock_services() -> [riverbed_core::testing::ServiceLock; 2] {
    use riverbed_core::testing::lock_service;
    let broker = lock_service("rabbitmq", false).await;
    [broker, lock_service("redis", true).await]
}

/// Whether RabbitMQ, PostgreSQL and Redis answer (fails under `RIVERBED_REQUIRE_SERVICES=1`).
pub fn available() -> bool {
    use riverbed_core::testing::require_service;
    require_service("RabbitMQ", "127.0.0.1:5672")
        && require_service("PostgreSQL", "127.0.0.1:5432")
        && require_service("Redis", "127.0.0.1:6379")
}

/// Polls `cond` every 20 ms until it holds; fails naming `what` after `limit`.
pub async fn wait_for<F: Future<Output = bool>>(
    what: &str,
    limit: Duration,
    mut cond: impl FnMut() -> F,
) {
    let deadline = Instant::now() + limit;
    while !cond().await {
        assert!(Instant::now() < deadline, "waited {limit:?} for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A pool on the test database, named apart from the daemon's connections.
pub async fn pg() -> sqlx::PgPool {
    let options: sqlx::postgres::PgConnectOptions = PG_URL.parse().unwrap();
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options.application_name("riverbed-recipe-test"))
        .await
        .expect("PostgreSQL connection")
}

/// A plain Redis connection.
pub async fn redis() -> redis::aio::MultiplexedConnection {
    redis::Client::open(REDIS_URL)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("Redis connection")
}

/// The totals under `names.prefix` (the `@as_of_ms` key aside) and the boundary they are for.
pub async fn redis_totals(names: &Names) -> (Totals, Option<u64>) {
    let mut c = redis().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*", names.prefix))
        .query_async(&mut c)
        .await
        .unwrap();
    let mut totals = Totals::new();
    for key in keys.iter().filter(|k| **k != names.as_of_key()) {
        let h: BTreeMap<String, String> = redis::cmd("HGETALL")
            .arg(key)
            .query_async(&mut c)
            .await
            .unwrap();
        let provider = key.strip_prefix(&names.prefix).unwrap().to_owned();
        totals.insert(provider, (h["count"].parse().unwrap(), cents(&h["sum"])));
    }
    (totals, as_of(&mut c, names).await)
}

/// The boundary the totals were last written for.
pub async fn as_of(c: &mut redis::aio::MultiplexedConnection, names: &Names) -> Option<u64> {
    redis::cmd("GET")
        .arg(names.as_of_key())
        .query_async(c)
        .await
        .unwrap()
}

/// Stops Redis without saving (every key is lost) and starts it again.
pub use riverbed_core::testing::restart_redis_losing_data as restart_redis;

/// A client connection to the broker with a confirm channel.
pub struct Broker {
    connection: Connection,
    channel: Channel,
}

impl Broker {
    /// Connects.
    pub async fn connect() -> Broker {
        let connection = Connection::connect(AMQP_URL, ConnectionProperties::default())
            .await
            .expect("RabbitMQ connection");
        let channel = connection.create_channel().await.unwrap();
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        Broker {
            connection,
            channel,
        }
    }

    /// Declares durable `queue` as the recipe's source declares it (its `queue_type`).
    pub async fn declare_like_the_recipe(&self, queue: &str) {
        let recipe: toml::Table = super::recipe::read("pipeline.toml").parse().unwrap();
        let mut args = FieldTable::default();
        if let Some(t) = recipe["source"].get("queue_type").and_then(|t| t.as_str()) {
            args.insert("x-queue-type".into(), AMQPValue::LongString(t.into()));
        }
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        self.channel
            .queue_declare(queue.into(), durable, args)
            .await
            .expect("declaring the queue as the recipe does");
    }

    /// Publishes a persistent message with id `id` to `queue` and waits for its confirm.
    pub async fn publish(&self, queue: &str, id: &str, payload: serde_json::Value) {
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_message_id(id.into());
        let mandatory = BasicPublishOptions {
            mandatory: true,
            ..Default::default()
        };
        let body = serde_json::to_vec(&payload).unwrap();
        let confirm = self
            .channel
            .basic_publish("".into(), queue.into(), mandatory, &body, props)
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(
            matches!(confirm, Confirmation::Ack(None)),
            "{id} confirmed and routed: {confirm:?}"
        );
    }

    /// Ready messages in `queue` (0 if it does not exist).
    pub async fn ready(&self, queue: &str) -> u32 {
        let ch = self.connection.create_channel().await.unwrap();
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        match ch
            .queue_declare(queue.into(), passive, FieldTable::default())
            .await
        {
            Ok(q) => q.message_count(),
            Err(_) => 0,
        }
    }

    /// Takes every message of `queue`.
    pub async fn take_all(&self, queue: &str) -> Vec<lapin::message::Delivery> {
        let mut out = Vec::new();
        let no_ack = BasicGetOptions { no_ack: true };
        while let Some(m) = self.channel.basic_get(queue.into(), no_ack).await.unwrap() {
            out.push(m.delivery);
        }
        out
    }

    /// Deletes `queues` (missing ones are fine).
    async fn delete(&self, queues: &[String]) {
        for q in queues {
            if let Ok(ch) = self.connection.create_channel().await {
                let _ = ch
                    .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                    .await;
            }
        }
    }
}

/// Deletes the run's queues, table, trigger function, sequence and Redis keys when dropped:
/// at the end of a passing run and when a failing one unwinds. Declare it before the daemons,
/// so they are stopped (dropped) first.
pub struct Cleanup {
    /// The run's names.
    pub names: Names,
}

impl Cleanup {
    async fn run(names: &Names) {
        let mut queues = vec![names.queue.clone(), names.dlq()];
        // Retry tiers are powers of two milliseconds: `<queue>.retry.<tier>ms`.
        queues.extend((0..=20).map(|p| format!("{}.retry.{}ms", names.queue, 1u64 << p)));
        Broker::connect().await.delete(&queues).await;
        let pg = pg().await;
        let table = &names.table;
        for sql in [
            format!("DROP TABLE IF EXISTS {table}, {table}_totals"),
            format!("DELETE FROM riverbed_totals_seeded WHERE totals_table = '\"{table}_totals\"'"),
            format!("DROP FUNCTION IF EXISTS {table}_stuck()"),
            format!("DROP SEQUENCE IF EXISTS {table}_stuck_attempts"),
        ] {
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&pg).await;
        }
        riverbed_core::testing::ensure_redis_up();
        let mut c = redis().await;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", names.prefix))
            .query_async(&mut c)
            .await
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(keys).query_async(&mut c).await;
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        // Drop cannot await; a thread with its own runtime can (also while unwinding).
        let names = self.names.clone();
        let done = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    tokio::time::timeout(Duration::from_secs(30), Cleanup::run(&names)).await
                })
        })
        .join();
        if !matches!(done, Ok(Ok(()))) {
            eprintln!("cleanup of {} did not finish", self.names.table);
        }
    }
}
