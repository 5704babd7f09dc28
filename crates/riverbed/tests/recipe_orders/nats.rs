//! The recipe on NATS JetStream (`recipes/orders/nats/`), on a nats-server of the test's own
//! (restarted mid-stream): the same shop, the stream declared before the first order, a
//! SIGKILL of production and a server restart with writes in flight, and a history service
//! that bootstraps late, resumes after the sequence stored with its rows (also when its
//! durable is gone) and survives a SIGKILL of its own.

use std::time::Duration;

use async_nats::jetstream;
use riverbed_core::testing::{lock_service, nats_server, require_service};

use super::observe::{count, stored_offsets, wait_blocked};
use super::recipe::{Broker, Recipe};
use super::service::Service;
use super::{SERIAL, Shop};

/// The port of the test's own nats-server.
const PORT: u16 = 14232;

fn services() -> bool {
    require_service("NATS", "127.0.0.1:4222") && require_service("PostgreSQL", "127.0.0.1:5432")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_nats_every_service_gets_every_order_once_even_one_started_late() {
    if !require_service("PostgreSQL", "127.0.0.1:5432") {
        return;
    }
    let _serial = SERIAL.lock().await;
    // A test that restarts PostgreSQL takes it exclusively: not while this one runs.
    let _database = lock_service("postgres", false).await;
    let Some(server) = tokio::task::spawn_blocking(|| nats_server(PORT, ""))
        .await
        .unwrap()
    else {
        return;
    };
    tokio::time::timeout(Duration::from_secs(150), scenario(server))
        .await
        .expect("the scenario finishes within two and a half minutes");
}

async fn scenario(server: riverbed_core::testing::TestServer) {
    let url = format!("nats://127.0.0.1:{PORT}");
    let shop = Shop::of(Recipe::new(Broker::Nats).on_nats_server(&url), Some(server)).await;
    shop.declare_topology().await;
    // 200 orders while no service runs: the stream keeps them for durables not created yet.
    shop.recipe.publish(0, 200).await;
    let billing = Service::start(&shop.recipe, "billing", &shop.billing);
    let production = Service::start(&shop.recipe, "production", &shop.production);
    shop.wait_rows(&["billing", "production"], 200).await;
    let production = shop.redelivery_and_crash(production).await;
    late_service_bootstraps_resumes_and_survives_a_crash(&shop).await;

    // Billing kept its durable through it all, and through the server's restart: an ack lost
    // in the restart brings its order again, which billing skips. Production's second run got
    // back exactly what the first never committed (300), and 250 more.
    let summary = billing.stop().await;
    eprintln!("billing, through the server restart: {summary}");
    assert!(summary["received"].as_u64().unwrap() >= 750, "{summary}");
    let log = std::fs::read_to_string(shop.recipe.dir().join("billing.log")).unwrap();
    assert!(
        log.contains("NATS connection lost"),
        "billing saw the server go away:\n{log}"
    );
    let summary = production.stop().await;
    assert_eq!(summary["received"], 550, "{summary}");
    shop.same_orders_everywhere(750).await;
    shop.pool.close().await;
}

/// The history service, started after all that: the 500 orders from the stream's first
/// message, then 100 live ones; stopped, its durable deleted (a new deployment), 100 more
/// published: started again, it reads only what follows the stored sequence. Then SIGKILLed
/// with a write of 50 more in flight: its next run writes those 50, and nothing else again.
async fn late_service_bootstraps_resumes_and_survives_a_crash(shop: &Shop) {
    let (recipe, pool) = (&shop.recipe, &shop.pool);
    let history = Service::start(recipe, "history", &shop.history);
    shop.wait_rows(&["history"], 500).await;
    recipe.publish(500, 100).await;
    shop.wait_rows(&["billing", "production", "history"], 600)
        .await;
    let summary = history.stop().await;
    assert_eq!(summary["received"], 600, "everything once: {summary}");
    assert_eq!(
        stored_offsets(pool, &recipe.client("history")).await,
        (600, 600),
        "the last stream sequence is stored with the rows"
    );

    let js = jetstream::new(async_nats::connect(&recipe.nats).await.unwrap());
    let durable = recipe.client("history");
    let stream = js.get_stream(&recipe.tag).await.unwrap();
    stream.delete_consumer(&durable).await.unwrap();
    recipe.publish(600, 100).await;
    let history = Service::start(recipe, "history", &shop.history);
    shop.wait_rows(&["history"], 700).await;
    let info = stream.consumer_info(&durable).await.unwrap();
    assert_eq!(
        (info.delivered.consumer_sequence, info.num_redelivered),
        (100, 0),
        "the new durable started after the stored sequence 600: only 601..=700 delivered"
    );

    let table = recipe.table("history");
    let mut lock = pool.begin().await.unwrap();
    let sql = format!("LOCK TABLE {table} IN SHARE MODE");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(&mut *lock)
        .await
        .unwrap();
    recipe.publish(700, 50).await;
    wait_blocked(pool, &recipe.client("history")).await;
    history.crash();
    lock.rollback().await.unwrap();
    assert_eq!(
        count(pool, &table).await,
        700,
        "the killed run committed none of the 50"
    );
    // What it had not acknowledged comes back after the recipe's `ack_wait` (10 s).
    let history = Service::start(recipe, "history", &shop.history);
    shop.wait_rows(&["billing", "production", "history"], 750)
        .await;
    let summary = history.stop().await;
    let reread = summary["received"].as_u64().unwrap_or(0).saturating_sub(50);
    eprintln!("history after its SIGKILL: {summary}; orders re-read: {reread}");
    assert_eq!(
        summary["received"], 50,
        "the restart read the 50 uncommitted orders, none of those stored before: {summary}"
    );
    let sql = format!(
        "SELECT count(DISTINCT stream_offset), min(stream_offset), max(stream_offset) FROM {table}"
    );
    let offsets: (i64, i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(offsets, (750, 1, 750), "every stream sequence written once");
    assert_eq!(
        stored_offsets(pool, &recipe.client("history")).await,
        (750, 750)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_nats_an_order_no_stream_takes_fails_loudly_instead_of_vanishing() {
    if !services() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let _broker = lock_service("nats", false).await;
    // A test that restarts PostgreSQL takes it exclusively: not while this one runs.
    let _database = lock_service("postgres", false).await;
    tokio::time::timeout(Duration::from_secs(60), async {
        let recipe = Recipe::new(Broker::Nats);
        // The seed's trap: the publisher runs before any stream was declared.
        let publisher = recipe.publisher(0, 5);
        let declared = recipe
            .riverbed(&["declare", publisher.to_str().unwrap()])
            .await;
        assert!(
            declared.contains("no broker topology"),
            "the publisher alone declares nothing: {declared}"
        );
        let (status, summary) = Service::start(&recipe, "publisher", &publisher)
            .finish()
            .await;
        assert!(status.success(), "the publisher ends normally: {status}");
        assert_eq!(summary["dead_lettered"], 5, "every order failed: {summary}");
        let log = std::fs::read_to_string(recipe.dir().join("publisher.log")).unwrap();
        assert!(
            log.contains("no stream captures the subject"),
            "each failure is in the log:\n{log}"
        );
        assert_eq!(
            super::dead_letters(&recipe, "retries_exhausted", Some("no_stream: ")),
            ["ord-0", "ord-1", "ord-2", "ord-3", "ord-4"]
        );
    })
    .await
    .expect("the test finishes within a minute");
}
