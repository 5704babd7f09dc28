//! RabbitMQ into the embedded default's table sink: SQLite (WAL, synchronous=FULL), idempotent
//! inserts by id.

use std::sync::Arc;

use anyhow::Result;
use riverbed_core::Sink;
use riverbed_sql::{ColumnType, Ident, SqliteWriter, TableSpec, WriteMode, sqlite_pool};

use super::amqp::{fill, through};
use super::{Ctx, Params, Scenario, column};
use crate::measure::Sample;

fn transactions_spec() -> Arc<TableSpec> {
    Arc::new(TableSpec {
        table: vec![Ident::new("transactions").expect("valid")],
        columns: vec![
            column("id", ColumnType::Text, "/id"),
            column("provider", ColumnType::Text, "/provider"),
            column("amount", ColumnType::Numeric, "/amount"),
            column("currency", ColumnType::Text, "/currency"),
        ],
        key: vec![Ident::new("id").expect("valid")],
        mode: WriteMode::Insert,
        create: true,
    })
}

async fn amqp_sqlite(ctx: Ctx) -> Result<Sample> {
    let out = ctx.dir.join(format!("{}.db", ctx.unique("t")));
    let _ = std::fs::remove_file(&out);
    let writer = SqliteWriter::new(sqlite_pool(&out).await?, transactions_spec(), None).await?;
    let sink: Arc<dyn Sink> = Arc::new(writer.into_sink("transactions"));
    let sample = through(ctx, vec![("transactions", sink)]).await?;
    let _ = std::fs::remove_file(&out);
    Ok(sample)
}

/// The RabbitMQ -> SQLite scenario.
pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "amqp-sqlite",
            what: "RabbitMQ -> Riverbed (defaults) -> SQLite table (idempotent insert, WAL, FULL sync), at-least-once",
            ceiling: Some("amqp-raw-consume"),
            baseline: Some("naive-pg-redis"),
            params: Params::DEFAULT,
            prepare: |ctx| Box::pin(fill(ctx)),
            run: |ctx| Box::pin(amqp_sqlite(ctx)),
            latency: true,
        },
        Scenario {
            name: "amqp-sqlite-tuned",
            what: "same, tuned: 1 partition (one SQLite writer)",
            ceiling: Some("amqp-raw-consume"),
            baseline: Some("naive-pg-redis"),
            params: Params {
                partitions: Some(1),
                ..Params::DEFAULT
            },
            prepare: |ctx| Box::pin(fill(ctx)),
            run: |ctx| Box::pin(amqp_sqlite(ctx)),
            latency: false,
        },
    ]
}
