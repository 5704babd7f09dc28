//! The embedded default: durable log -> SQLite table, against SQLite's own insert ceiling.

use std::sync::Arc;

use riverbed_core::{HeaderValue, KeySpec, NoopSink, Pipeline};
use riverbed_embedded::{DataKind, Durability, EmbeddedLog, Generator, LogSource, Record};
use riverbed_sql::{ColumnType, Ident, SqliteWriter, TableSpec, WriteMode, sqlite_pool};

use super::latency::{Latencies, SENT_HEADER, Timed, micros_now};
use super::{Ctx, Params, Scenario, column, no_prepare};
use crate::measure::{Sample, timed};

fn log_path(ctx: &Ctx) -> std::path::PathBuf {
    ctx.dir.join("bench-log.db")
}

async fn prepare_log(ctx: Ctx) -> anyhow::Result<()> {
    let log = EmbeddedLog::open(log_path(&ctx), Durability::Full).await?;
    let (have, _) = log.topic_stats("readings").await?;
    let mut generator = Generator::new(DataKind::Sensors, 1, 64, None);
    let mut left = ctx.messages().saturating_sub(have);
    while left > 0 {
        let n = left.min(5000);
        log.append(
            "readings",
            (0..n)
                .map(|_| generator.next_record())
                .collect::<Vec<Record>>(),
        )
        .await?;
        left -= n;
    }
    Ok(())
}

fn readings_spec() -> Arc<TableSpec> {
    Arc::new(TableSpec {
        table: vec![Ident::new("readings").expect("valid")],
        columns: vec![
            column("reading_id", ColumnType::Text, "/reading_id"),
            column("sensor_id", ColumnType::Text, "/sensor_id"),
            column("value", ColumnType::Real, "/value"),
        ],
        key: vec![Ident::new("reading_id").expect("valid")],
        mode: WriteMode::Insert,
        create: true,
    })
}

async fn log_to(ctx: Ctx, sqlite: bool) -> anyhow::Result<Sample> {
    let log = EmbeddedLog::open(log_path(&ctx), Durability::Full).await?;
    // A latency run follows a topic of its own, fed at the offered rate while it runs.
    let topic = if ctx.rate > 0 {
        format!("latency-{}-{}", std::process::id(), ctx.run)
    } else {
        "readings".to_owned()
    };
    let source = LogSource::open(
        &log,
        &topic,
        &format!("bench-{}-{}", std::process::id(), ctx.run),
        ctx.rate > 0,
    )
    .await?;
    let out = ctx.dir.join(format!("out-{}.db", ctx.run));
    let _ = std::fs::remove_file(&out);
    let latencies = Latencies::default();
    let builder = if ctx.rate > 0 {
        Pipeline::builder().source(Timed::new(source, latencies.clone()))
    } else {
        Pipeline::builder().source(source)
    };
    let mut builder = builder.key(KeySpec::JsonPointer("/sensor_id".into()));
    if let Some(p) = ctx.params.partitions {
        builder = builder.partitions(p.try_into()?);
    }
    if let Some(w) = ctx.params.window {
        builder = builder.max_in_flight(w.try_into()?);
    }
    let builder = if sqlite {
        let writer = SqliteWriter::new(sqlite_pool(&out).await?, readings_spec(), None).await?;
        builder.sink("readings", writer.into_sink("readings"))
    } else {
        builder.sink("noop", NoopSink)
    };
    let pipeline = builder.build()?;
    let stats = pipeline.stats();
    let count = ctx.messages();
    let producer = (ctx.rate > 0).then(|| tokio::spawn(paced_append(log.clone(), topic, ctx)));
    let mut sample = timed(|| async move {
        let done = async move {
            while stats.snapshot().acked < count {
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
        };
        let report = pipeline.run(done).await?;
        anyhow::ensure!(
            report.stats.acked == count,
            "acked {} of {count}",
            report.stats.acked
        );
        Ok(report.stats.acked)
    })
    .await?;
    if let Some(p) = producer {
        p.await??;
    }
    if let Some((p50, p99)) = latencies.percentiles() {
        (sample.p50_ms, sample.p99_ms) = (Some(p50), Some(p99));
    }
    Ok(sample)
}

/// Appends sensor readings stamped with their send time, `ctx.rate` per second in bursts.
async fn paced_append(log: EmbeddedLog, topic: String, ctx: Ctx) -> anyhow::Result<()> {
    let mut generator = Generator::new(DataKind::Sensors, 2, 64, None);
    let started = std::time::Instant::now();
    let (mut sent, burst) = (0u64, 100u64);
    while sent < ctx.messages() {
        let n = burst.min(ctx.messages() - sent);
        let records: Vec<Record> = (0..n)
            .map(|_| {
                let mut r = generator.next_record();
                r.headers
                    .insert(SENT_HEADER.into(), HeaderValue::Int(micros_now()));
                r
            })
            .collect();
        log.append(&topic, records).await?;
        sent += n;
        let due = std::time::Duration::from_secs_f64(sent as f64 / ctx.rate as f64);
        tokio::time::sleep(due.saturating_sub(started.elapsed())).await;
    }
    Ok(())
}

/// SQLite alone: the same rows in 1,000-row transactions of multi-row inserts (WAL, FULL sync).
async fn sqlite_ceiling(ctx: Ctx) -> anyhow::Result<Sample> {
    let out = ctx.dir.join(format!("raw-{}.db", ctx.run));
    let _ = std::fs::remove_file(&out);
    let pool = sqlite_pool(&out).await?;
    let spec = readings_spec();
    sqlx::query(sqlx::AssertSqlSafe(riverbed_sql::create_table(
        &spec,
        riverbed_sql::Dialect::Sqlite,
    )))
    .execute(&pool)
    .await?;
    let mut generator = Generator::new(DataKind::Sensors, 1, 64, None);
    let rows: Vec<(String, String, f64)> = (0..ctx.messages())
        .map(|_| {
            let v: serde_json::Value =
                serde_json::from_slice(&generator.next_record().payload).expect("JSON");
            (
                v["reading_id"].as_str().expect("id").to_owned(),
                v["sensor_id"].as_str().expect("sensor").to_owned(),
                v["value"].as_f64().expect("value"),
            )
        })
        .collect();
    let per_statement = riverbed_sql::rows_per_statement(&spec, riverbed_sql::Dialect::Sqlite);
    timed(|| async move {
        for tx_rows in rows.chunks(1000) {
            let mut tx = pool.begin().await?;
            for chunk in tx_rows.chunks(per_statement) {
                let mut q = sqlx::query(sqlx::AssertSqlSafe(riverbed_sql::insert(
                    &spec,
                    riverbed_sql::Dialect::Sqlite,
                    chunk.len(),
                )));
                for (id, sensor, value) in chunk {
                    q = q.bind(id).bind(sensor).bind(value);
                }
                q.execute(&mut *tx).await?;
            }
            tx.commit().await?;
        }
        Ok(rows.len() as u64)
    })
    .await
}

/// The embedded scenarios.
pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "sqlite-ceiling",
            what: "SQLite alone: multi-row inserts in 1,000-row transactions (WAL, synchronous=FULL)",
            ceiling: None,
            baseline: None,
            params: Params::DEFAULT,
            latency: false,
            prepare: no_prepare,
            run: |ctx| Box::pin(sqlite_ceiling(ctx)),
        },
        Scenario {
            name: "embedded-noop",
            what: "embedded log (durable, prefilled) -> runtime keyed by /sensor_id -> no-op sink",
            ceiling: Some("runtime-noop-json-key"),
            baseline: None,
            params: Params::DEFAULT,
            latency: false,
            prepare: |ctx| Box::pin(prepare_log(ctx)),
            run: |ctx| Box::pin(log_to(ctx, false)),
        },
        Scenario {
            name: "embedded-sqlite",
            what: "embedded log -> runtime keyed by /sensor_id -> SQLite table (idempotent insert, FULL sync)",
            ceiling: Some("sqlite-ceiling"),
            baseline: None,
            params: Params::DEFAULT,
            latency: true,
            prepare: |ctx| Box::pin(prepare_log(ctx)),
            run: |ctx| Box::pin(log_to(ctx, true)),
        },
        Scenario {
            name: "embedded-sqlite-tuned",
            what: "same, tuned: 1 partition, in-flight 16384 (one SQLite writer; larger group commits)",
            ceiling: Some("sqlite-ceiling"),
            baseline: None,
            params: Params {
                partitions: Some(1),
                window: Some(16384),
                ..Params::DEFAULT
            },
            latency: false,
            prepare: |ctx| Box::pin(prepare_log(ctx)),
            run: |ctx| Box::pin(log_to(ctx, true)),
        },
    ]
}
