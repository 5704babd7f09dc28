//! Parse, don't validate: the raw file becomes checked settings in one place, with every
//! semantic error pointing at its line. Nothing here connects to anything.

use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::Arc;

use riverbed_core::{BatchSettings, KeySpec, RetryPolicy};
use riverbed_sql::{Ident, TableSpec};
use toml::Spanned;

use super::load::ConfigError;
use super::raw::*;
pub use super::steps::RESTORE_FIELDS;
use super::steps::{check_processor, check_sink};

/// A pipeline file, checked.
#[derive(Debug)]
pub struct Plan {
    /// Partitions.
    pub partitions: NonZeroUsize,
    /// In-flight limit.
    pub max_in_flight: NonZeroUsize,
    /// Partition key.
    pub key: KeySpec,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// Deliveries of a message before it is dead-lettered unprocessed.
    pub max_deliveries: NonZeroU32,
    /// Shutdown grace.
    pub shutdown_grace: std::time::Duration,
    /// The dead-letter storm guard, unless turned off.
    pub storm_guard: Option<riverbed_core::StormGuard>,
    /// The source.
    pub source: SourceKind,
    /// Processors in order.
    pub processors: Vec<ProcessorPlan>,
    /// Sinks.
    pub sinks: Vec<SinkPlan>,
    /// Dead letters, if named.
    pub dead_letter: Option<DeadLetterKind>,
    /// Tasks beside the pipeline.
    pub tasks: Vec<TaskEntry>,
    /// The sinks whose stored offsets the source resumes after (every sink that stores
    /// offsets, the one `resume_from` names first; empty without `resume_from`): the lowest
    /// of their positions.
    pub resume_from: Vec<usize>,
    /// The admin HTTP server, if configured.
    pub admin: Option<super::admin::AdminPlan>,
    /// How instances share the work, if they do.
    pub cluster: Option<super::cluster::ClusterPlan>,
    /// Feed producer tracking, if configured.
    pub feed: Option<super::feed::FeedPlan>,
    /// Set by the daemon once it leads with a fenced lease: every message carries it.
    pub fencing_token: Option<u64>,
    /// The control queue taking reconfiguration commands, if configured.
    pub control: Option<riverbed_amqp::ControlQueue>,
    /// Partition leases this process holds (mode `partitioned` on NATS), kept across the
    /// pipelines a reconfiguration builds: the daemon hands every plan the same set.
    pub held_partitions: HeldPartitions,
}

pub use crate::held::HeldPartitions;

/// A checked processor.
#[derive(Debug)]
pub enum ProcessorPlan {
    /// Running aggregate.
    Aggregate {
        /// Step name.
        name: String,
        /// Field pointer.
        field: String,
        /// Output stream.
        output: String,
        /// Index of the SQL sink to restore state from.
        restore_from: Option<usize>,
        /// Pointer to the per-key growing position, if not the source's.
        position_from: Option<String>,
    },
    /// Filter.
    Filter {
        /// Step name.
        name: String,
        /// Field pointer.
        field: String,
        /// Values.
        equals: Vec<serde_json::Value>,
        /// Drop matches instead.
        negate: bool,
    },
}

/// A checked sink.
#[derive(Debug)]
pub struct SinkPlan {
    /// Name.
    pub name: String,
    /// Stream read.
    pub input: String,
    /// Batch settings, if given.
    pub batch: Option<BatchSettings>,
    /// What it is.
    pub kind: SinkPlanKind,
}

/// Checked sink kinds.
#[derive(Debug)]
pub enum SinkPlanKind {
    /// SQLite table.
    Sqlite {
        /// File.
        path: std::path::PathBuf,
        /// Table spec.
        spec: Arc<TableSpec>,
        /// Offsets consumer.
        offsets: Option<String>,
    },
    /// JSON lines on stdout.
    Stdout {
        /// Envelope.
        envelope: bool,
    },
    /// JSON lines in a file.
    File {
        /// File.
        path: std::path::PathBuf,
        /// Envelope.
        envelope: bool,
    },
    /// Discard.
    Noop,
    /// PostgreSQL table.
    Postgres(Box<riverbed_sql::PostgresSinkConfig>),
    /// Redis counters.
    RedisHashIncr(Box<riverbed_redis::HashIncrConfig>),
    /// Redis latest state.
    RedisLatest(Box<riverbed_redis::LatestConfig>),
    /// RabbitMQ publish.
    Amqp(Box<riverbed_amqp::AmqpSinkConfig>),
    /// NATS JetStream publish.
    Nats(Box<riverbed_nats::NatsSinkConfig>),
    /// HTTP requests.
    Http(Box<riverbed_http::HttpSinkConfig>),
}

pub(super) struct Checker<'a> {
    pub(super) text: &'a str,
}

impl Checker<'_> {
    pub(super) fn err<T>(
        &self,
        span: std::ops::Range<usize>,
        msg: impl Into<String>,
    ) -> Result<T, ConfigError> {
        Err(ConfigError::at(self.text, span, msg))
    }

    pub(super) fn nonzero(
        &self,
        v: &Spanned<usize>,
        field: &str,
    ) -> Result<NonZeroUsize, ConfigError> {
        NonZeroUsize::new(*v.get_ref()).map_or_else(
            || self.err(v.span(), format!("`{field}` must be at least 1")),
            Ok,
        )
    }

    pub(super) fn pointer(&self, v: &Spanned<String>, field: &str) -> Result<String, ConfigError> {
        let p = v.get_ref();
        if !p.starts_with('/') {
            return self.err(
                v.span(),
                format!("`{field}` must be a JSON pointer such as \"/{p}\""),
            );
        }
        Ok(p.clone())
    }

    pub(super) fn ident(&self, v: &Spanned<String>, field: &str) -> Result<Ident, ConfigError> {
        Ident::new(v.get_ref()).or_else(|e| self.err(v.span(), format!("`{field}`: {e}")))
    }
}

/// Checks a parsed file.
pub fn check(text: &str, raw: RawConfig) -> Result<Plan, ConfigError> {
    let c = Checker { text };
    let partitions = c.nonzero(&raw.pipeline.partitions, "pipeline.partitions")?;
    let max_in_flight = c.nonzero(&raw.pipeline.max_in_flight, "pipeline.max_in_flight")?;
    let key = match &raw.pipeline.key {
        None => KeySpec::Source,
        Some(k) => k
            .get_ref()
            .parse()
            .or_else(|e: String| c.err(k.span(), format!("`pipeline.key`: {e}")))?,
    };
    let attempts = &raw.retry.max_attempts;
    let Some(max_attempts) = NonZeroU32::new(*attempts.get_ref()) else {
        return c.err(attempts.span(), "`retry.max_attempts` must be at least 1");
    };
    let deliveries = &raw.retry.max_deliveries;
    let Some(max_deliveries) = NonZeroU32::new(*deliveries.get_ref()) else {
        return c.err(
            deliveries.span(),
            "`retry.max_deliveries` must be at least 1",
        );
    };
    let retry = RetryPolicy {
        max_attempts,
        initial_backoff: raw.retry.initial_backoff,
        max_backoff: raw.retry.max_backoff.max(raw.retry.initial_backoff),
        mode: raw.retry.mode,
    };
    let storm_guard = check_storm(&c, raw.pipeline.dead_letter_storm.as_ref())?;
    let sinks = raw
        .sinks
        .iter()
        .enumerate()
        .map(|(i, s)| check_sink(&c, i, s))
        .collect::<Result<Vec<_>, _>>()?;
    if sinks.is_empty() {
        return c.err(0..0, "a pipeline needs at least one [[sinks]] entry");
    }
    for (i, s) in raw.sinks.iter().enumerate() {
        if sinks[..i].iter().any(|o| o.name == sinks[i].name) {
            return c.err(
                s.name.span(),
                format!("two sinks are named `{}`", sinks[i].name),
            );
        }
    }
    let processors = raw
        .processors
        .iter()
        .map(|p| check_processor(&c, p, &sinks))
        .collect::<Result<Vec<_>, _>>()?;
    let mut streams = vec!["main".to_owned()];
    streams.extend(processors.iter().filter_map(|p| match p {
        ProcessorPlan::Aggregate { output, .. } => Some(output.clone()),
        ProcessorPlan::Filter { .. } => None,
    }));
    for (s, plan) in raw.sinks.iter().zip(&sinks) {
        if !streams.contains(&plan.input) {
            let span = s.input.as_ref().map(|i| i.span()).unwrap_or(s.name.span());
            return c.err(
                span,
                format!(
                    "sink `{}` reads stream `{}`, which nothing emits (streams: {})",
                    plan.name,
                    plan.input,
                    streams.join(", ")
                ),
            );
        }
    }
    let source_span = raw.source.span();
    match raw.source.get_ref() {
        SourceKind::Amqp(a) => {
            if let Err(e) = riverbed_amqp::AmqpSource::new((**a).clone()) {
                return c.err(source_span, format!("`source`: {e}"));
            }
        }
        SourceKind::Nats(n) => check_nats_source(&c, source_span, n, &retry)?,
        SourceKind::Generate(g) if g.skip > 0 && g.rate.is_some() => {
            return c.err(
                source_span,
                "`source`: `skip` cannot be combined with `rate` (the pace would count the \
                 skipped records)",
            );
        }
        SourceKind::PostgresOutbox(o) => {
            super::outbox::check_outbox_source(&c, source_span.clone(), o, retry.mode)?;
        }
        SourceKind::Embedded(_) | SourceKind::Generate(_) => {}
    }
    if let Some(dl) = &raw.dead_letter
        && let DeadLetterKind::Amqp(a) = dl.get_ref()
        && let Err(e) = riverbed_amqp::AmqpDeadLetters::new((**a).clone())
    {
        return c.err(dl.span(), format!("`dead_letter`: {e}"));
    }
    let cluster = super::cluster::check_cluster(
        &c,
        raw.cluster.as_ref(),
        raw.source.get_ref(),
        retry.mode,
        &sinks,
    )?;
    if let Some(dl) = &raw.dead_letter
        && let DeadLetterKind::Nats(n) = dl.get_ref()
        && let Err(e) = riverbed_nats::NatsDeadLetters::new((**n).clone())
    {
        return c.err(dl.span(), format!("`dead_letter`: {e}"));
    }
    let feed = super::feed::check_feed(&c, raw.feed.as_ref(), raw.source.get_ref())?;
    if let (Some(_), Some(r)) = (&feed, &raw.pipeline.resume_from) {
        return c.err(
            r.span(),
            "`pipeline.resume_from` (a stream) cannot be combined with `[feed]` (server-named queues)",
        );
    }
    super::resume::check_consumers(&c, &raw.sinks, &sinks)?;
    super::counters::check_counters(&c, &raw.sinks, &sinks, &raw.tasks)?;
    let resume_from = match &raw.pipeline.resume_from {
        None => Vec::new(),
        Some(name) => super::resume::check_resume(&c, name, &sinks, raw.source.get_ref())?,
    };
    let control = match &raw.control {
        None => None,
        Some(ctl) => match riverbed_amqp::ControlQueue::new(ctl.get_ref().clone()) {
            Ok(q) => Some(q),
            Err(e) => return c.err(ctl.span(), format!("`control`: {e}")),
        },
    };
    Ok(Plan {
        cluster,
        feed,
        control,
        held_partitions: HeldPartitions::default(),
        fencing_token: None,
        admin: super::admin::check_admin(&c, raw.admin.as_ref())?,
        resume_from,
        partitions,
        max_in_flight,
        key,
        retry,
        max_deliveries,
        shutdown_grace: raw.pipeline.shutdown_grace,
        storm_guard,
        source: raw.source.into_inner(),
        processors,
        sinks,
        dead_letter: raw.dead_letter.map(Spanned::into_inner),
        tasks: raw.tasks,
    })
}

/// The storm guard's settings, each refused at its own line.
fn check_storm(
    c: &Checker<'_>,
    section: Option<&Spanned<StormSection>>,
) -> Result<Option<riverbed_core::StormGuard>, ConfigError> {
    let Some(section) = section else {
        return Ok(Some(riverbed_core::StormGuard::default()));
    };
    let s = section.get_ref();
    if !s.enabled {
        return Ok(None);
    }
    let share = *s.max_share.get_ref();
    if !(share > 0.0 && share < 1.0) {
        return c.err(
            s.max_share.span(),
            "`pipeline.dead_letter_storm.max_share` must be between 0 and 1 (exclusive)",
        );
    }
    let Some(window) = NonZeroU32::new(*s.window.get_ref()) else {
        return c.err(
            s.window.span(),
            "`pipeline.dead_letter_storm.window` must be at least 1",
        );
    };
    let Some(min_sample) = NonZeroU32::new(*s.min_sample.get_ref()).filter(|m| *m <= window) else {
        let span = if s.min_sample.span() == (0..0) {
            s.window.span()
        } else {
            s.min_sample.span()
        };
        return c.err(
            span,
            format!(
                "`pipeline.dead_letter_storm.min_sample` must be between 1 and `window` ({window})"
            ),
        );
    };
    Ok(Some(riverbed_core::StormGuard {
        max_share: share,
        window,
        min_sample,
    }))
}

/// A NATS source must build, and a server-side `max_deliver` must leave the pipeline its
/// attempts (else the server stops redelivering before the message is dead-lettered).
fn check_nats_source(
    c: &Checker<'_>,
    span: std::ops::Range<usize>,
    n: &riverbed_nats::NatsSourceConfig,
    retry: &RetryPolicy,
) -> Result<(), ConfigError> {
    if let Err(e) = riverbed_nats::NatsSource::new(n.clone()) {
        return c.err(span, format!("`source`: {e}"));
    }
    if let Some(m) = n.max_deliver
        && m <= retry.max_attempts.get()
    {
        return c.err(
            span,
            format!(
                "`source`: `max_deliver` ({m}) must exceed `retry.max_attempts` ({}): the server \
                 would stop redelivering before the message is dead-lettered",
                retry.max_attempts
            ),
        );
    }
    Ok(())
}
