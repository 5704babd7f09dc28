//! Looking at the outcome: rows in PostgreSQL, writes waiting for a lock, connections on the
//! broker, and the orders the recipe's publisher sends.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::{PgPool, Row};

use super::LIMIT;

/// An order as a table holds it: customer, model, amount, currency, created_at (ms).
pub type Order = (String, String, String, String, i64);

/// Rows in `table` (0 while it does not exist).
pub async fn count(pool: &PgPool, table: &str) -> i64 {
    let sql = format!("SELECT count(*) FROM {table}");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_one(pool)
        .await
        .map(|r| r.get(0))
        .unwrap_or(0)
}

/// Waits until `table` holds exactly `n` rows (never more: each row is an order).
pub async fn wait_rows(pool: &PgPool, table: &str, n: i64) {
    let deadline = Instant::now() + LIMIT;
    loop {
        let now = count(pool, table).await;
        assert!(
            now <= n,
            "{table} holds {now} rows, more than the {n} orders"
        );
        if now == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{table} reached {now} of {n} rows"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until a connection of `application` waits for a lock in PostgreSQL.
pub async fn wait_blocked(pool: &PgPool, application: &str) {
    let deadline = Instant::now() + LIMIT;
    loop {
        let waiting: i64 = sqlx::query(
            "SELECT count(*) FROM pg_stat_activity
             WHERE application_name = $1 AND wait_event_type = 'Lock'",
        )
        .bind(application)
        .fetch_one(pool)
        .await
        .unwrap()
        .get(0);
        if waiting > 0 {
            return;
        }
        assert!(Instant::now() < deadline, "{application} never wrote");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The lowest and highest stream offsets stored for `consumer`.
pub async fn stored_offsets(pool: &PgPool, consumer: &str) -> (i64, i64) {
    sqlx::query_as(
        "SELECT min(\"position\"), max(\"position\") FROM riverbed_offsets WHERE consumer = $1",
    )
    .bind(consumer)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Every order of `table`, by external id.
pub async fn orders(pool: &PgPool, table: &str) -> BTreeMap<String, Order> {
    let sql = format!(
        "SELECT external_id, customer, model, amount::text, currency,
                (extract(epoch FROM created_at) * 1000)::bigint FROM {table}"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_all(pool)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3), r.get(4), r.get(5))))
        .collect()
}

/// The first `n` orders of the publisher's seeded sequence, by external id: customer, model,
/// amount, currency.
pub fn published(seed: u64, keys: u32, n: u64) -> BTreeMap<String, [String; 4]> {
    use riverbed_embedded::{DataKind, Generator};
    let mut generator = Generator::new(DataKind::Orders, seed, keys, None);
    (0..n)
        .map(|_| {
            let v: Value = serde_json::from_slice(&generator.next_record().payload).unwrap();
            let s = |f: &str| v[f].as_str().unwrap().to_owned();
            let id = s("external_id");
            (
                id,
                [
                    s("customer"),
                    s("model"),
                    v["amount"].to_string(),
                    s("currency"),
                ],
            )
        })
        .collect()
}

/// The broker's process ids of the connections named `name` (their `connection_name`).
pub fn connections(name: &str) -> Vec<String> {
    let out = Command::new("rabbitmqctl")
        .args(["list_connections", "-q", "-t", "10", "--no-table-headers"])
        .args(["pid", "client_properties"])
        .output()
        .expect("rabbitmqctl runs");
    assert!(out.status.success(), "rabbitmqctl list_connections failed");
    let quoted = format!("\"{name}\"");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&quoted))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// Closes the one broker connection named `name` (only it: other tests keep theirs), and
/// waits until its client connected again.
pub async fn lose_connection(name: &str) {
    let old = connections(name);
    assert_eq!(old.len(), 1, "{name} has one broker connection: {old:?}");
    let out = Command::new("rabbitmqctl")
        .args(["close_connection", &old[0], "recipe test: connection lost"])
        .output()
        .expect("rabbitmqctl runs");
    assert!(out.status.success(), "rabbitmqctl close_connection failed");
    let deadline = Instant::now() + LIMIT;
    loop {
        let now = connections(name);
        if !now.is_empty() && !now.contains(&old[0]) {
            return;
        }
        assert!(Instant::now() < deadline, "{name} did not reconnect");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
