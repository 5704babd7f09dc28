//! Helpers of the outbox tests: relay configuration, enqueueing, claiming with a deadline,
//! settling, waiting for the unsent count.

#![allow(dead_code)]

use std::time::Duration;

use riverbed_core::{Delivery, Settled, Settlement, Source};
use riverbed_sql::{
    DatabaseUrl, Outbox, OutboxSource, PostgresConnectionConfig, PostgresOutboxConfig,
    VERSION_HEADER,
};
use serde_json::json;
use sqlx::PgPool;

use crate::support::{PG_URL, drop_tables};

pub fn config(table: &str, app: &str) -> PostgresOutboxConfig {
    let mut connection: PostgresConnectionConfig =
        toml::from_str(&format!("url = \"{PG_URL}\"")).unwrap();
    connection.url = DatabaseUrl::new(PG_URL);
    connection.application_name = app.into();
    let mut c = PostgresOutboxConfig::new(connection);
    c.table = table.into();
    c.poll_interval = Duration::from_millis(200);
    c
}

/// Drops the outbox tables.
pub async fn drop_outbox(pool: &PgPool, table: &str) {
    let names = [
        table.to_owned(),
        format!("{table}_versions"),
        format!("{table}_dead_letters"),
    ];
    drop_tables(pool, &names.iter().map(String::as_str).collect::<Vec<_>>()).await;
}

/// Enqueues one message per entity in one committed transaction each.
pub async fn enqueue_all(pool: &PgPool, outbox: &Outbox, entities: &[&str]) {
    for e in entities {
        let mut tx = pool.begin().await.unwrap();
        outbox
            .enqueue(&mut tx, e, &json!({"entity": e}))
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
}

/// One `recv` with a deadline.
pub async fn recv(source: &mut OutboxSource, max: usize) -> Vec<Delivery> {
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), source.recv(&mut out, max))
        .await
        .expect("a claim within 10 s")
        .unwrap();
    out
}

pub fn ack(source: &OutboxSource, deliveries: &[Delivery]) {
    source.acker().settle(
        deliveries
            .iter()
            .map(|d| Settled {
                token: d.token,
                settlement: Settlement::Ack,
                message: None,
            })
            .collect(),
    );
}

pub async fn unsent(pool: &PgPool, table: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM \"{table}\" WHERE sent_at IS NULL"
    )))
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Waits until `table` has `n` unsent rows.
pub async fn wait_unsent(pool: &PgPool, table: &str, n: i64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while unsent(pool, table).await != n {
        assert!(
            std::time::Instant::now() < deadline,
            "{n} unsent rows expected"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn version(d: &Delivery) -> i64 {
    d.message.headers[VERSION_HEADER].as_i64().unwrap()
}
