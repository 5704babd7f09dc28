//! `[cluster]`: how several instances of one pipeline share the work.

use std::num::NonZeroU16;

use riverbed_core::RetryMode;
use serde::Deserialize;
use toml::Spanned;

use super::check::Checker;
use super::check::SinkPlan;
use super::load::ConfigError;
use super::raw::SourceKind;

mod redundant;
mod singleton;

pub use redundant::DedupPlan;

/// The header carrying a Redis lease's fencing token on every message a leader consumes.
pub const FENCING_TOKEN_HEADER: &str = "riverbed-fencing-token";

/// `[cluster]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// How instances share the work.
    ///
    /// `singleton`: one instance consumes, the others stand by; the one holding the lease
    /// (a PostgreSQL advisory lock on a dedicated connection) is the leader. A leader that can
    /// no longer check its lease exits at once (its deliveries are redelivered); a standby that
    /// takes the lease waits `3 x check_every` before it consumes.
    ///
    /// `partitioned`: the source queue becomes `partitions` queues `<queue>.0` ..
    /// `<queue>.<n-1>` behind the consistent-hash exchange `<queue>` (producers publish to it
    /// with the key as routing key), each with a single active consumer: RabbitMQ gives each
    /// partition to one instance at a time and moves it when that instance goes away, so
    /// per-key order holds while instances join, leave and die. On a NATS source, which has
    /// no single active consumer, each partition is a durable consumer of its own (`durable`
    /// and `filter_subject` hold `{partition}`) behind a lease `<name>.<partition>`: an
    /// instance consumes the partitions whose lease it wins, and takes over those of an
    /// instance that dies.
    ///
    /// `redundant`: every instance consumes its own copy of the stream (an exclusive,
    /// server-named queue bound to the exchange) and a shared dedup store (`dedup`) lets
    /// exactly one of them write each message: killing any instance loses nothing.
    pub mode: ClusterMode,
    /// Partition queues (mode `partitioned`): more than the instances you plan to run, so
    /// that a new instance has partitions to take.
    pub partitions: Option<Spanned<u16>>,
    /// Where the lease lives (mode `singleton`, and `partitioned` on NATS): `postgres` (the default: an
    /// advisory lock on a dedicated connection) or `redis` (`SET NX PX`, renewed, with a
    /// fencing token in the header `riverbed-fencing-token` of every message).
    #[serde(default)]
    pub lease: LeaseKind,
    /// The lease's name (mode `singleton`; the prefix of the partition leases on NATS):
    /// instances of one pipeline share it.
    pub name: Option<Spanned<String>>,
    /// The PostgreSQL database holding the lease (mode `singleton`, and `partitioned` on NATS).
    pub postgres: Option<riverbed_sql::PostgresConnectionConfig>,
    /// The Redis holding the lease (`lease = "redis"`).
    pub redis: Option<riverbed_redis::RedisConfig>,
    /// How redundant instances agree on who writes each message (mode `redundant`).
    pub dedup: Option<Spanned<redundant::DedupSection>>,
    /// How often the leader checks its lease and a standby tries to take it.
    #[serde(default = "default_check_every", with = "humantime_serde")]
    pub check_every: std::time::Duration,
}

fn default_check_every() -> std::time::Duration {
    std::time::Duration::from_millis(300)
}

/// `cluster.mode`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClusterMode {
    /// One instance consumes; the others stand by for the lease.
    Singleton,
    /// Partition queues with a single active consumer each.
    Partitioned,
    /// Every instance consumes its own copy; a dedup store picks one writer per message.
    Redundant,
}

/// `cluster.lease`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseKind {
    /// A session-level advisory lock on a dedicated PostgreSQL connection.
    #[default]
    Postgres,
    /// `SET NX PX` on Redis, renewed by the holder, with a fencing token.
    Redis,
}

/// A checked `[cluster]` section.
#[derive(Debug, Clone)]
pub enum ClusterPlan {
    /// Consume this many partition queues.
    Partitioned(NonZeroU16),
    /// Consume the partitions of a NATS stream whose lease this instance wins: one durable
    /// consumer per partition (`{partition}` in `durable` and `filter_subject`).
    NatsPartitioned {
        /// How many partitions.
        partitions: NonZeroU16,
        /// The leases, `<name>.<partition>`.
        lease: SingletonPlan,
    },
    /// Consume only while holding this lease.
    Singleton(SingletonPlan),
    /// Consume an own copy; write only what this instance claims.
    Redundant(redundant::RedundantPlan),
}

/// A checked singleton lease.
#[derive(Debug, Clone)]
pub struct SingletonPlan {
    /// The lease's name.
    pub name: String,
    /// Where it lives.
    pub lease: LeasePlan,
    /// How often it is checked.
    pub check_every: std::time::Duration,
}

/// Where a checked singleton lease lives.
#[derive(Debug, Clone)]
pub enum LeasePlan {
    /// An advisory lock in this database.
    Postgres(riverbed_sql::PostgresConnectionConfig),
    /// A key on this Redis.
    Redis(riverbed_redis::RedisConfig),
}

/// Checks `[cluster]` against the source and the retry mode.
pub(super) fn check_cluster(
    c: &Checker<'_>,
    section: Option<&Spanned<ClusterSection>>,
    source: &SourceKind,
    retry: RetryMode,
    sinks: &[SinkPlan],
) -> Result<Option<ClusterPlan>, ConfigError> {
    let Some(section) = section else {
        return Ok(None);
    };
    let span = section.span();
    let cluster = section.get_ref();
    if cluster.mode == ClusterMode::Singleton {
        return singleton::check(c, span, cluster).map(|s| Some(ClusterPlan::Singleton(s)));
    }
    if cluster.mode == ClusterMode::Redundant {
        return redundant::check(c, span, cluster, source, sinks)
            .map(|r| Some(ClusterPlan::Redundant(r)));
    }
    if let SourceKind::Nats(n) = source {
        return nats_partitioned(c, span, cluster, n, retry);
    }
    if cluster.name.is_some() || cluster.postgres.is_some() || cluster.redis.is_some() {
        return c.err(
            span,
            "`cluster.name`, `cluster.postgres` and `cluster.redis` are for mode = \"singleton\" \
             (and mode = \"partitioned\" on a NATS source)",
        );
    }
    if cluster.dedup.is_some() {
        return c.err(span, "`cluster.dedup` is for mode = \"redundant\"");
    }
    let Some(n) = &cluster.partitions else {
        return c.err(
            span,
            "`cluster.partitions` is required with mode = \"partitioned\"",
        );
    };
    let Some(partitions) = NonZeroU16::new(*n.get_ref()) else {
        return c.err(n.span(), "`cluster.partitions` must be at least 1");
    };
    let SourceKind::Amqp(a) = source else {
        return c.err(span, "mode = \"partitioned\" needs an `amqp` source");
    };
    if retry == RetryMode::Broker {
        return c.err(
            span,
            "mode = \"partitioned\" keeps per-key order, which `retry.mode = \"broker\"` gives \
             up (later messages overtake a parked one): use `in_process`",
        );
    }
    if let Err(e) = riverbed_amqp::AmqpSource::partitioned((**a).clone(), partitions) {
        return c.err(span, format!("`cluster`: {e}"));
    }
    Ok(Some(ClusterPlan::Partitioned(partitions)))
}

/// The `{partition}` placeholder of a NATS source's `durable` and `filter_subject`.
pub const PARTITION_PLACEHOLDER: &str = "{partition}";

/// Mode `partitioned` on a NATS source: JetStream has no single active consumer, so each
/// partition is a durable consumer of its own behind a lease (the singleton lease's kinds).
fn nats_partitioned(
    c: &Checker<'_>,
    span: std::ops::Range<usize>,
    cluster: &ClusterSection,
    source: &riverbed_nats::NatsSourceConfig,
    retry: RetryMode,
) -> Result<Option<ClusterPlan>, ConfigError> {
    let Some(n) = &cluster.partitions else {
        return c.err(
            span,
            "`cluster.partitions` is required with mode = \"partitioned\"",
        );
    };
    let partitions = match NonZeroU16::new(*n.get_ref()) {
        Some(p) if p.get() as usize <= riverbed_core::merge::MAX_JOINED => p,
        _ => {
            return c.err(
                n.span(),
                format!(
                    "`cluster.partitions` must be between 1 and {} on a NATS source",
                    riverbed_core::merge::MAX_JOINED
                ),
            );
        }
    };
    if retry == RetryMode::Broker {
        return c.err(
            span,
            "mode = \"partitioned\" keeps per-key order, which `retry.mode = \"broker\"` gives \
             up (a delayed nak lets later messages overtake): use `in_process`",
        );
    }
    let filter = source.filter_subject.as_deref().unwrap_or_default();
    if !source.durable.contains(PARTITION_PLACEHOLDER) || !filter.contains(PARTITION_PLACEHOLDER) {
        return c.err(
            span,
            "mode = \"partitioned\" on a NATS source needs `{partition}` in the source's \
             `durable` and `filter_subject` (e.g. \"orders-{partition}\" and \
             \"orders.*.{partition}\"): one durable consumer per partition",
        );
    }
    let lease = singleton::lease(c, span.clone(), cluster, "partitioned")?;
    let first = nats_partition(source, 0);
    if let Err(e) = riverbed_nats::NatsSource::new(first) {
        return c.err(span, format!("`source`: {e}"));
    }
    Ok(Some(ClusterPlan::NatsPartitioned { partitions, lease }))
}

/// The source configuration of NATS partition `p`: `{partition}` replaced by `p`.
pub fn nats_partition(
    config: &riverbed_nats::NatsSourceConfig,
    p: u16,
) -> riverbed_nats::NatsSourceConfig {
    let mut one = config.clone();
    one.durable = one.durable.replace(PARTITION_PLACEHOLDER, &p.to_string());
    one.filter_subject = one
        .filter_subject
        .map(|f| f.replace(PARTITION_PLACEHOLDER, &p.to_string()));
    one
}

/// The AMQP source of `plan` (whose source is `config`): consuming its partition queues in
/// mode `partitioned`, with the plan's delivery limit.
pub fn amqp_source(
    config: &riverbed_amqp::AmqpSourceConfig,
    plan: &super::Plan,
) -> riverbed_amqp::Result<riverbed_amqp::AmqpSource> {
    let source = match &plan.cluster {
        Some(ClusterPlan::Partitioned(n)) => {
            riverbed_amqp::AmqpSource::partitioned(config.clone(), *n)?
        }
        Some(
            ClusterPlan::Singleton(_)
            | ClusterPlan::Redundant(_)
            | ClusterPlan::NatsPartitioned { .. },
        )
        | None => riverbed_amqp::AmqpSource::new(config.clone())?,
    };
    Ok(source.max_deliveries(plan.max_deliveries.get()))
}

#[cfg(test)]
mod tests;
