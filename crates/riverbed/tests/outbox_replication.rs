//! The transactional outbox end to end: 3 producer processes change 1,000 entities of their
//! source tables concurrently, each change and its event in one transaction; 2 relay daemons
//! (`recipes/replication/producer.toml`) publish the outbox to RabbitMQ, one of them SIGKILLed
//! mid-run; 2 consumer daemons (`recipes/replication/consumer.toml`) apply the events. The
//! replicated table equals the source tables, and the consumers' arrival log never shows a
//! version of an entity applied after a newer one.
//!
//! RabbitMQ is a node of its own with the consistent-hash exchange plugin the recipe needs
//! (the shared broker may not have it enabled, and tests never reconfigure it).

#[path = "recipe_replication/arrival_log.rs"]
mod arrival_log;
#[path = "outages/arrivals.rs"]
mod arrivals;
#[path = "outbox_replication/check.rs"]
mod check;
#[path = "recipe_transactions/daemon.rs"]
mod daemon;
#[path = "outbox_replication/files.rs"]
mod files;
#[path = "outbox_replication/producer.rs"]
mod producer;

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use riverbed_core::testing::{lock_service, rabbitmq_cluster_named, require_service};
use sqlx::PgPool;

use arrival_log::reorderings;
use check::{replica, truth};
use files::{KINDS, Names, consumer_file, relay_file};

use daemon::Daemon;

/// The test database.
pub const PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
const ENTITIES: u32 = 1000;
const PRODUCERS: u32 = 3;
const ROUNDS: u32 = 1;
/// The private RabbitMQ node's AMQP port (its distribution port is 100 above).
const AMQP_PORT: u16 = 56810;
/// The broker URL in the recipe files.
pub const RECIPE_AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

async fn scalar(pg: &PgPool, sql: String) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_one(pg)
        .await
        .unwrap_or(0)
}

/// Waits until `sql` counts at least `n`.
async fn wait_count(pg: &PgPool, sql: &str, n: i64, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let c = scalar(pg, sql.to_owned()).await;
        if c >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "`{sql}`: {c} of {n} after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn create_tables(pg: &PgPool, names: &Names) {
    for k in KINDS {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE TABLE {}_{k} (id text PRIMARY KEY, version bigint NOT NULL, deleted boolean NOT NULL, data jsonb)",
            names.sources
        )))
        .execute(pg)
        .await
        .unwrap();
    }
    arrival_log::create_arrivals(pg, &names.arrivals).await;
    riverbed_sql::OutboxTable::new(&names.outbox)
        .unwrap()
        .create(pg)
        .await
        .unwrap();
}

/// Starts producer `p` as a process: this test binary running [`outbox_producer_process`].
fn spawn_producer(p: u32, names: &Names) -> Child {
    let job = producer::Job {
        producer: p,
        url: PG_URL.into(),
        outbox: names.outbox.clone(),
        prefix: names.sources.clone(),
        entities: ENTITIES,
        rounds: ROUNDS,
    };
    Command::new(std::env::current_exe().unwrap())
        .args([
            "outbox_producer_process",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env(producer::ENV, serde_json::to_string(&job).unwrap())
        .spawn()
        .unwrap()
}

/// Waits for a producer process to exit successfully.
async fn wait_producer(child: &mut Child, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "a producer failed: {status}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "a producer did not finish in {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
#[ignore = "a producer process of the outbox test, started by it"]
fn outbox_producer_process() {
    let Ok(job) = std::env::var(producer::ENV) else {
        return;
    };
    let job: producer::Job = serde_json::from_str(&job).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let committed = rt.block_on(producer::run(&job));
    eprintln!("producer {} committed {committed} changes", job.producer);
}

#[test]
fn the_outbox_relay_recipe_validates() {
    let file =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../recipes/replication/producer.toml");
    arrivals::validate(&file);
}

/// Ready messages in `queue` of the broker at `amqp`.
async fn ready(amqp: &str, queue: &str) -> u32 {
    let conn = lapin::Connection::connect(amqp, lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let q = ch
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await
        .unwrap();
    let _ = conn.close(200, "OK".into()).await;
    q.message_count()
}

async fn run(pg: &PgPool, names: &Names, amqp: &str) {
    let dir = tempfile::tempdir().unwrap();
    create_tables(pg, names).await;
    let consumer = consumer_file(dir.path(), names, amqp);
    let relay = relay_file(dir.path(), names, amqp);
    arrivals::declare(&consumer);
    let consumers: Vec<Daemon> = (0..2)
        .map(|_| Daemon::spawn("consumer", &consumer, "info"))
        .collect();
    for d in &consumers {
        d.wait_log("Consuming", Duration::from_secs(30), |_| true)
            .await;
    }
    let mut relays = vec![
        Daemon::spawn("relay 1", &relay, "info"),
        Daemon::spawn("relay 2", &relay, "info"),
    ];
    for d in &relays {
        d.wait_log("Outbox relay started", Duration::from_secs(30), |_| true)
            .await;
    }
    let mut producers: Vec<Child> = (0..PRODUCERS).map(|p| spawn_producer(p, names)).collect();
    let arrived = format!("SELECT count(*) FROM {}", names.arrivals);
    wait_count(pg, &arrived, i64::from(ENTITIES), Duration::from_secs(60)).await;
    relays[0].kill();
    for p in &mut producers {
        wait_producer(p, Duration::from_secs(240)).await;
    }
    let total = scalar(pg, format!("SELECT count(*) FROM {}", names.outbox)).await;
    let events = i64::from(ENTITIES * PRODUCERS * ROUNDS);
    assert!(total > events / 2, "{total} events enqueued");
    wait_count(pg, &arrived, total, Duration::from_secs(120)).await;
    let unsent = format!(
        "SELECT count(*) FROM {} WHERE sent_at IS NULL",
        names.outbox
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while scalar(pg, unsent.clone()).await > 0 {
        assert!(Instant::now() < deadline, "outbox rows left unsent");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let expected = truth(pg, names).await;
    assert_eq!(expected.len(), ENTITIES as usize);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = replica(pg, names).await;
        if got == expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the replica never matched the source tables"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let dead = format!("SELECT count(*) FROM {}_dead_letters", names.outbox);
    assert_eq!(scalar(pg, dead).await, 0, "no outbox dead letters");
    assert_eq!(
        ready(amqp, &format!("{}.dlq", names.exchange)).await,
        0,
        "nothing dead-lettered"
    );
    assert_eq!(
        reorderings(pg, &names.arrivals).await,
        0,
        "no version applied after a newer one"
    );
    eprintln!("{total} events relayed through a SIGKILL, replica equal to the sources");
    for mut d in relays.into_iter().skip(1).chain(consumers) {
        d.terminate();
        let (status, summary) = d.exit(Duration::from_secs(30)).await;
        assert!(status.success(), "{summary}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_relays_three_producers_through_a_relay_sigkill_into_the_replication_recipe() {
    if !require_service("PostgreSQL", "127.0.0.1:5432") {
        return;
    }
    let _lock = lock_service("postgres", false).await;
    let Some(rabbit) =
        tokio::task::spawn_blocking(|| rabbitmq_cluster_named("riverbed-outbox", AMQP_PORT, 1))
            .await
            .unwrap()
    else {
        return;
    };
    let pg = PgPool::connect(PG_URL).await.unwrap();
    let names = Names::new();
    let amqp = rabbit.url(0);
    let result = tokio::time::timeout(Duration::from_secs(420), run(&pg, &names, &amqp)).await;
    for t in names.tables() {
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP TABLE IF EXISTS {t}")))
            .execute(&pg)
            .await;
    }
    result.expect("the outbox run finishes");
    drop(rabbit);
}
