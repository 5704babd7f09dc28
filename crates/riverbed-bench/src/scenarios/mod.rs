//! The scenarios: each moves messages one way and reports what it measured.

pub mod amqp;
pub mod amqp_sqlite;
pub mod embedded;
pub mod handwritten;
pub mod latency;
pub mod naive;
pub mod nats;
pub mod outbox;
pub mod partitioned;
pub mod postgres;
pub mod publish;
pub mod runtime;

use std::path::PathBuf;

use anyhow::Result;
use futures::future::BoxFuture;

use crate::measure::Sample;

/// What a scenario varies.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    /// Pipeline partitions (None: the default).
    pub partitions: Option<usize>,
    /// In-flight window and broker prefetch (None: the defaults).
    pub window: Option<usize>,
    /// Payload size in bytes (about).
    pub size: usize,
    /// Messages per run instead of the harness count (the naive consumer is slow, a backlog
    /// test needs its own size).
    pub count: Option<u64>,
}

impl Params {
    /// Defaults everywhere, ~100-byte messages.
    pub const DEFAULT: Params = Params {
        partitions: None,
        window: None,
        size: 100,
        count: None,
    };
}

/// Where a scenario runs.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// A data directory shared by the runs of one harness invocation.
    pub dir: PathBuf,
    /// Messages per run.
    pub count: u64,
    /// Which run this is (distinct queues, consumers and output files per run).
    pub run: u32,
    /// Messages per second offered by a latency run (0: throughput run).
    pub rate: u64,
    /// The scenario's parameters.
    pub params: Params,
    /// A name unique to this scenario (queues and tables derive from it).
    pub name: &'static str,
}

impl Ctx {
    /// Messages this run moves.
    pub fn messages(&self) -> u64 {
        self.params.count.unwrap_or(self.count)
    }

    /// A broker or database name unique to this scenario and run.
    pub fn unique(&self, what: &str) -> String {
        format!("bench_{}_{what}_{}", self.name.replace('-', "_"), self.run)
    }
}

/// One scenario.
pub struct Scenario {
    /// Its name on the command line and in the table.
    pub name: &'static str,
    /// What it measures.
    pub what: &'static str,
    /// The ceiling it is compared with, if any.
    pub ceiling: Option<&'static str>,
    /// The naive baseline it is compared with, if any.
    pub baseline: Option<&'static str>,
    /// Its parameters.
    pub params: Params,
    /// Prepares one run (in the parent, not measured): fills queues, logs.
    pub prepare: fn(Ctx) -> BoxFuture<'static, Result<()>>,
    /// Runs once, in a child process.
    pub run: fn(Ctx) -> BoxFuture<'static, Result<Sample>>,
    /// Whether it can run at a fixed offered load to measure latency.
    pub latency: bool,
}

impl Scenario {
    /// Long scenarios (big backlogs) run only when named with `--only`.
    pub fn by_default(&self) -> bool {
        !self.name.contains("backlog")
    }
}

/// Every scenario, in table order.
pub fn all() -> Vec<Scenario> {
    let mut v = runtime::scenarios();
    v.extend(embedded::scenarios());
    v.extend(amqp::scenarios());
    v.extend(naive::scenarios());
    v.extend(nats::scenarios());
    v.extend(partitioned::scenarios());
    v.extend(amqp_sqlite::scenarios());
    v.extend(handwritten::scenarios());
    v.extend(postgres::scenarios());
    v.extend(publish::scenarios());
    v.extend(outbox::scenarios());
    v
}

/// A table column filled from `from` (a JSON pointer or `$position`-style source).
pub fn column(name: &str, ty: riverbed_sql::ColumnType, from: &str) -> riverbed_sql::Column {
    riverbed_sql::Column {
        name: riverbed_sql::Ident::new(name).expect("valid"),
        ty,
        from: from.parse().expect("valid"),
        required: false,
    }
}

/// Removes what a failed run may have left behind (its queue, dead-letter queue and table),
/// so that it does not weigh on the runs measured after it. Best effort: a run that never
/// reached a service leaves nothing there.
pub async fn clean_up(ctx: Ctx) {
    let _ = amqp::cleanup(&ctx).await;
    if let Ok(pool) = sqlx::PgPool::connect(postgres::PG).await {
        let table = ctx.unique("t");
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE IF EXISTS {table}")))
            .execute(&pool)
            .await;
        pool.close().await;
    }
}

/// Nothing to prepare.
pub fn no_prepare(_: Ctx) -> BoxFuture<'static, Result<()>> {
    Box::pin(async { Ok(()) })
}
