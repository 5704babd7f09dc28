//! Turning a checked plan into a running pipeline: open the log, connect the sinks, restore
//! aggregate state. The TOML daemon is a thin layer over the library's builder.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use riverbed_core::processors::{AggregateState, Filter, RunningAggregate};
use riverbed_core::{DeadLetterSink, NoopSink, Pipeline, Sink};
use riverbed_embedded::{
    Durability, EmbeddedLog, GenerateSource, Generator, JsonLinesSink, LineTarget, LogDeadLetters,
    LogOnlyDeadLetters, LogSource,
};
use riverbed_sql::{
    SettledPosition, SqliteWriter, TableSpec, TrackSettled, ValueSource, sqlite_pool,
};
use sqlx::{Row, SqlitePool};

use super::check::{Plan, ProcessorPlan, RESTORE_FIELDS, SinkPlanKind};
use super::cluster::{ClusterPlan, DedupPlan, amqp_source};
use super::feed::FeedPlan;
use super::raw::{DeadLetterKind, GenerateSection, SourceKind, TaskEntry, TaskKind};
use crate::feed::FeedSource;
use futures::future::BoxFuture;

/// Shared handles: one embedded log per file, one SQLite writer pool per file.
#[derive(Default)]
struct Handles {
    logs: HashMap<PathBuf, EmbeddedLog>,
    pools: HashMap<PathBuf, SqlitePool>,
}

impl Handles {
    async fn log(&mut self, path: &Path, durability: Durability) -> Result<EmbeddedLog> {
        if let Some(l) = self.logs.get(path) {
            return Ok(l.clone());
        }
        let log = EmbeddedLog::open(path, durability)
            .await
            .with_context(|| format!("opening the embedded log {}", path.display()))?;
        self.logs.insert(path.to_owned(), log.clone());
        Ok(log)
    }

    async fn pool(&mut self, path: &Path) -> Result<SqlitePool> {
        if let Some(p) = self.pools.get(path) {
            return Ok(p.clone());
        }
        let pool = sqlite_pool(path)
            .await
            .with_context(|| format!("opening SQLite file {}", path.display()))?;
        self.pools.insert(path.to_owned(), pool.clone());
        Ok(pool)
    }
}

/// A task that runs beside the pipeline until the given future completes.
pub type Task = Box<dyn FnOnce(BoxFuture<'static, ()>) -> tokio::task::JoinHandle<()> + Send>;

/// A built pipeline and the tasks that run beside it.
pub struct Built {
    /// The pipeline.
    pub pipeline: Pipeline,
    /// Its companion tasks (already reconciled: they run from the first boundary on).
    pub tasks: Vec<Task>,
    /// Its connections' and breakers' live state, for `/ready` and `/api/status`.
    pub probes: super::probes::Probes,
}

/// Builds the pipeline described by `plan`, and runs startup reconciliation before it runs.
/// The sinks come first: one with `create_table` creates the table a reconciliation queries.
pub async fn build(mut plan: Plan) -> Result<Built> {
    let tasks = std::mem::take(&mut plan.tasks);
    let mut probes = super::probes::Probes::default();
    let (pipeline, feed) = build_pipeline(plan, &mut probes).await?;
    let mut tasks = build_tasks(&tasks, &pipeline).await?;
    tasks.extend(feed);
    Ok(Built {
        tasks,
        pipeline,
        probes,
    })
}

async fn build_tasks(entries: &[TaskEntry], pipeline: &Pipeline) -> Result<Vec<Task>> {
    let mut tasks: Vec<Task> = Vec::new();
    for t in entries {
        match &t.kind {
            TaskKind::WindowCounter(c) => {
                let counter = c
                    .counter(&t.name)
                    .await
                    .with_context(|| format!("building task `{}`", t.name))?;
                let groups = counter
                    .reconcile()
                    .await
                    .with_context(|| format!("reconciling `{}` at start", t.name))?;
                tracing::info!(task = %t.name, groups, "Startup reconciliation written");
                tasks.push(Box::new(move |stop| tokio::spawn(counter.run(stop))));
            }
            TaskKind::Reconcile(c) => {
                let groups = c
                    .run()
                    .await
                    .with_context(|| format!("reconciling `{}` at start", t.name))?;
                tracing::info!(task = %t.name, groups, "Startup reconciliation written");
            }
            TaskKind::PipelineMetrics(m) => tasks.push(m.task(&t.name, pipeline.stats()).await?),
        }
    }
    Ok(tasks)
}

/// The AMQP source wrapped for feed tracking, and the tracking's driver to run beside the
/// pipeline.
async fn feed_source(
    plan: &FeedPlan,
    source: riverbed_amqp::AmqpSource,
) -> Result<(FeedSource<riverbed_amqp::AmqpSource>, Task)> {
    let status = source.status();
    let (shared, driver) = crate::feed::prepare(plan, Box::new(move || status.sessions())).await?;
    let producers = plan.producers.clone();
    let task: Task = Box::new(move |stop| tokio::spawn(driver.run(producers, stop)));
    let messages = Arc::new(plan.messages.clone());
    Ok((FeedSource::new(source, shared, messages), task))
}

async fn build_pipeline(
    plan: Plan,
    probes: &mut super::probes::Probes,
) -> Result<(Pipeline, Option<Task>)> {
    let mut handles = Handles::default();
    let mut feed_task = None;
    let mut settled: Option<SettledPosition> = None;
    let mut builder = Pipeline::builder()
        .partitions(plan.partitions)
        .max_in_flight(plan.max_in_flight)
        .key(plan.key.clone())
        .retry(plan.retry)
        .max_deliveries(plan.max_deliveries)
        .storm_guard(plan.storm_guard)
        .shutdown_grace(plan.shutdown_grace);
    builder = match &plan.source {
        SourceKind::Embedded(e) => {
            let log = handles.log(&e.path, e.durability).await?;
            let source = LogSource::open(&log, &e.topic, &e.consumer, e.follow).await?;
            builder.source(source)
        }
        SourceKind::Generate(g) => builder.source(generate_source(g)),
        SourceKind::Amqp(a) if !plan.resume_from.is_empty() => {
            let mut source = riverbed_amqp::AmqpSource::new((**a).clone())?
                .max_deliveries(plan.max_deliveries.get());
            let status = source.status();
            probes.source(move || status.connection());
            if let Some(position) = stored_position(&mut handles, &plan).await? {
                tracing::info!(position, "Stream resumes after the stored offset");
                source = source.resume_after(position);
            }
            let (source, position) = TrackSettled::new(source);
            settled = Some(position);
            builder.source(source)
        }
        SourceKind::Amqp(a) => {
            let source = amqp_source(a, &plan)?;
            let status = source.status();
            probes.source(move || status.connection());
            if let Some(backlog) = source.backlog_probe() {
                probes.backlog(backlog);
            }
            match &plan.feed {
                Some(f) => {
                    let (source, task) = feed_source(f, source).await?;
                    feed_task = Some(task);
                    builder.source(source)
                }
                None => builder.source(source),
            }
        }
        SourceKind::Nats(n) => {
            if let Some(ClusterPlan::NatsPartitioned { partitions, lease }) = &plan.cluster {
                anyhow::ensure!(
                    plan.resume_from.is_empty(),
                    "`pipeline.resume_from` cannot be used with mode = \"partitioned\" on a NATS \
                     source (each partition's durable keeps its own position)"
                );
                let (source, task, status) =
                    super::nats_partitions::source(n, &plan, *partitions, lease, probes)?;
                probes.source(move || status.connection());
                feed_task = Some(task);
                builder.source(source)
            } else {
                let mut source = nats_source(n, &plan)?;
                let status = source.status();
                probes.source(move || status.connection());
                probes.backlog(source.backlog_probe());
                if plan.resume_from.is_empty() {
                    builder.source(source)
                } else {
                    if let Some(position) = stored_position(&mut handles, &plan).await? {
                        tracing::info!(position, "Stream resumes after the stored sequence");
                        source = source.resume_after(position);
                    }
                    let (source, position) = TrackSettled::new(source);
                    settled = Some(position);
                    builder.source(source)
                }
            }
        }
        SourceKind::PostgresOutbox(o) => builder.source(
            riverbed_sql::OutboxSource::open((**o).clone())
                .await
                .context("opening the outbox")?,
        ),
    };
    let mut sinks: Vec<Arc<dyn Sink>> = Vec::with_capacity(plan.sinks.len());
    for s in &plan.sinks {
        let sink: Arc<dyn Sink> = match &s.kind {
            SinkPlanKind::Sqlite {
                path,
                spec,
                offsets,
            } => {
                let pool = handles.pool(path).await?;
                let writer = SqliteWriter::new(pool, spec.clone(), offsets.as_deref())
                    .await
                    .with_context(|| {
                        format!("preparing table {} for sink `{}`", spec.table_sql(), s.name)
                    })?;
                match (&settled, offsets) {
                    (Some(p), Some(_)) => {
                        Arc::new(writer.into_sink(&s.name).with_settled(p.clone()))
                    }
                    _ => Arc::new(writer.into_sink(&s.name)),
                }
            }
            SinkPlanKind::Stdout { envelope } => {
                Arc::new(JsonLinesSink::new(LineTarget::Stdout, *envelope))
            }
            SinkPlanKind::File { path, envelope } => Arc::new(JsonLinesSink::new(
                LineTarget::File(path.clone()),
                *envelope,
            )),
            SinkPlanKind::Noop => Arc::new(NoopSink),
            SinkPlanKind::Postgres(p) => p
                .build_with(&s.name, settled.clone())
                .await
                .with_context(|| format!("building sink `{}`", s.name))?,
            SinkPlanKind::RedisHashIncr(r) => Arc::new(
                riverbed_redis::HashIncrSink::from_config(&s.name, r)
                    .await
                    .with_context(|| format!("building sink `{}`", s.name))?,
            ),
            SinkPlanKind::Amqp(a) => {
                let sink = riverbed_amqp::AmqpSink::new((**a).clone())?;
                sink.connect()
                    .await
                    .with_context(|| format!("connecting sink `{}`", s.name))?;
                Arc::new(sink)
            }
            SinkPlanKind::Nats(n) => {
                let sink = riverbed_nats::NatsSink::new((**n).clone())?;
                sink.connect()
                    .await
                    .with_context(|| format!("connecting sink `{}`", s.name))?;
                Arc::new(sink)
            }
            SinkPlanKind::Http(h) => {
                let sink = riverbed_http::HttpSink::new(&s.name, (**h).clone())?;
                probes.breaker(&s.name, sink.breaker().clone());
                Arc::new(sink)
            }
            SinkPlanKind::RedisLatest(r) => Arc::new(
                riverbed_redis::LatestSink::from_config(&s.name, r)
                    .await
                    .with_context(|| format!("building sink `{}`", s.name))?,
            ),
        };
        sinks.push(sink);
    }
    if let Some(token) = plan.fencing_token {
        builder = builder.processor(move |_| {
            Box::new(riverbed_core::FnProcessor::new(
                "fencing",
                move |m: riverbed_core::Message| {
                    Ok(Some(m.with_header(
                        super::cluster::FENCING_TOKEN_HEADER,
                        token as i64,
                    )))
                },
            ))
        });
    }
    for p in &plan.processors {
        builder = match p {
            ProcessorPlan::Aggregate {
                name,
                field,
                output,
                restore_from,
                position_from,
            } => {
                let state = match restore_from {
                    Some(i) => restore_state(&mut handles, &plan, *i).await?,
                    None => HashMap::new(),
                };
                let (name, field, output) = (name.clone(), field.clone(), output.clone());
                let position_from = position_from.clone();
                builder.processor(move |_| {
                    let a = RunningAggregate::new(&name, &field, &output).with_state(state.clone());
                    Box::new(match &position_from {
                        Some(f) => a.position_from(f),
                        None => a,
                    })
                })
            }
            ProcessorPlan::Filter {
                name,
                field,
                equals,
                negate,
            } => {
                let (name, field, equals, negate) =
                    (name.clone(), field.clone(), equals.clone(), *negate);
                builder.processor(move |_| {
                    Box::new(if negate {
                        Filter::drop(&name, &field, equals.clone())
                    } else {
                        Filter::keep(&name, &field, equals.clone())
                    })
                })
            }
        };
    }
    for (s, sink) in plan.sinks.iter().zip(sinks) {
        let sink = claimed(&plan, &s.name, sink).await?;
        builder = builder.sink_with(&s.name, &s.input, sink, s.batch);
    }
    if let Some(dl) = &plan.dead_letter {
        let dest: Arc<dyn DeadLetterSink> = match dl {
            DeadLetterKind::Embedded(e) => {
                let log = handles.log(&e.path, Durability::Full).await?;
                Arc::new(LogDeadLetters::new(&log, &e.topic))
            }
            DeadLetterKind::File(f) => {
                Arc::new(riverbed_embedded::FileDeadLetters::new(f.path.clone()))
            }
            DeadLetterKind::Log(_) => Arc::new(LogOnlyDeadLetters),
            DeadLetterKind::Amqp(a) => {
                let dl = riverbed_amqp::AmqpDeadLetters::new((**a).clone())?;
                dl.connect()
                    .await
                    .context("connecting the dead-letter queue")?;
                Arc::new(dl)
            }
            DeadLetterKind::Nats(n) => {
                let dl = riverbed_nats::NatsDeadLetters::new((**n).clone())?;
                dl.connect()
                    .await
                    .context("connecting the dead-letter subject")?;
                Arc::new(dl)
            }
        };
        builder = builder.dead_letters(dest);
    }
    let pipeline = builder.build()?;
    let names = plan.sinks.iter().map(|s| s.name.as_str());
    probes.sinks(names, pipeline.sink_health());
    Ok((pipeline, feed_task))
}

/// In mode `redundant` with a Redis dedup store, `sink` writes only the messages this
/// instance claims; otherwise it is `sink` itself (an inbox deduplicates by itself).
async fn claimed(plan: &Plan, name: &str, sink: Arc<dyn Sink>) -> Result<Arc<dyn Sink>> {
    let Some(ClusterPlan::Redundant(r)) = &plan.cluster else {
        return Ok(sink);
    };
    let DedupPlan::Redis {
        config,
        id,
        claim_ttl,
        ttl,
    } = &r.dedup
    else {
        return Ok(sink);
    };
    let store = riverbed_redis::RedisClaims::connect(config, &r.prefix(name), *claim_ttl, *ttl)
        .await
        .with_context(|| format!("connecting the dedup store of sink `{name}`"))?;
    Ok(Arc::new(riverbed_core::ClaimedSink::new(
        sink,
        Arc::new(store),
        id.clone(),
    )))
}

/// The NATS source of `n`; `max_ack_pending` follows the pipeline's `max_in_flight` unless
/// the file sets it, so the server never hands out more than the pipeline can hold.
fn nats_source(
    n: &riverbed_nats::NatsSourceConfig,
    plan: &Plan,
) -> Result<riverbed_nats::NatsSource> {
    let window = u32::try_from(plan.max_in_flight.get()).unwrap_or(u32::MAX);
    Ok(riverbed_nats::NatsSource::new(n.clone())?.with_default_max_ack_pending(window))
}

/// The generator of `g`, past its `skip` first records.
pub(super) fn generate_source(g: &GenerateSection) -> GenerateSource {
    let mut generator = Generator::new(g.data, g.seed, g.keys, g.malformed_every);
    for _ in 0..g.skip {
        generator.next_record();
    }
    // The source counts from the generator's start, skipped records included.
    let count = g.count.map(|c| c.saturating_add(g.skip));
    GenerateSource::new(generator, count, g.rate)
}

/// The position after which every sink storing offsets has committed everything: the lowest
/// of their stored positions, or `None` (the configured start) when any of them has none.
/// Every store is asked, so each gives every partition a row.
async fn stored_position(handles: &mut Handles, plan: &Plan) -> Result<Option<u64>> {
    let partitions = plan.partitions.get() as u32;
    let mut lowest = Some(u64::MAX);
    for &i in &plan.resume_from {
        let store = match &plan.sinks[i].kind {
            SinkPlanKind::Sqlite {
                path,
                offsets: Some(consumer),
                ..
            } => riverbed_sql::OffsetStore::sqlite(handles.pool(path).await?, consumer).await?,
            SinkPlanKind::Postgres(p) => {
                let consumer = p
                    .offsets
                    .as_deref()
                    .expect("checked: the sink stores offsets");
                riverbed_sql::OffsetStore::postgres(p.connection.connect().await?, consumer).await?
            }
            _ => unreachable!("checked: resume_from lists sinks with offsets"),
        };
        let position = store.resume_position(partitions).await?;
        tracing::info!(sink = %plan.sinks[i].name, position, "Stored offset read");
        lowest = lowest.zip(position).map(|(a, b)| a.min(b));
    }
    Ok(lowest)
}

/// Reads an aggregate's committed snapshots back from its SQL sink.
async fn restore_state(
    handles: &mut Handles,
    plan: &Plan,
    sink: usize,
) -> Result<HashMap<String, AggregateState>> {
    let SinkPlanKind::Sqlite { path, spec, .. } = &plan.sinks[sink].kind else {
        unreachable!("checked: restore_from names a SQL sink")
    };
    let pool = handles.pool(path).await?;
    if spec.create {
        sqlx::query(sqlx::AssertSqlSafe(riverbed_sql::create_table(
            spec,
            riverbed_sql::Dialect::Sqlite,
        )))
        .execute(&pool)
        .await?;
    }
    let cols: Vec<String> = RESTORE_FIELDS.iter().map(|f| column_for(spec, f)).collect();
    let sql = format!("SELECT {} FROM {}", cols.join(", "), spec.table_sql());
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_all(&pool)
        .await?;
    let mut state = HashMap::with_capacity(rows.len());
    for r in rows {
        let key: String = r.try_get(0)?;
        state.insert(
            key,
            AggregateState {
                count: r.try_get::<i64, _>(1)? as u64,
                sum: r.try_get(2)?,
                min: r.try_get(3)?,
                max: r.try_get(4)?,
                last_position: r.try_get::<Option<i64>, _>(5)?.map(|p| p as u64),
            },
        );
    }
    tracing::info!(keys = state.len(), sink = %plan.sinks[sink].name, "Aggregate state restored");
    Ok(state)
}

fn column_for(spec: &TableSpec, pointer: &str) -> String {
    spec.columns
        .iter()
        .find(|c| c.from == ValueSource::Pointer(pointer.into()))
        .map(|c| c.name.quoted())
        .expect("checked: every restore field has a column")
}
