//! `[cluster]`: how several instances of one pipeline share the work.

use std::num::NonZeroU16;

use riverbed_core::RetryMode;
use serde::Deserialize;
use toml::Spanned;

use super::check::Checker;
use super::load::ConfigError;
use super::raw::SourceKind;

/// `[cluster]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// How instances share the work. `partitioned`: the source queue becomes `partitions`
    /// queues `<queue>.0` .. `<queue>.<n-1>` behind the consistent-hash exchange `<queue>`
    /// (producers publish to it with the key as routing key), each with a single active
    /// consumer: RabbitMQ gives each partition to one instance at a time and moves it when that
    /// instance goes away, so per-key order holds while instances join, leave and die.
    pub mode: ClusterMode,
    /// Partition queues (mode `partitioned`): more than the instances you plan to run, so
    /// that a new instance has partitions to take.
    pub partitions: Option<Spanned<u16>>,
}

/// `cluster.mode`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClusterMode {
    /// Partition queues with a single active consumer each.
    Partitioned,
}

/// A checked `[cluster]` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterPlan {
    /// Consume this many partition queues.
    Partitioned(NonZeroU16),
}

/// Checks `[cluster]` against the source and the retry mode.
pub(super) fn check_cluster(
    c: &Checker<'_>,
    section: Option<&Spanned<ClusterSection>>,
    source: &SourceKind,
    retry: RetryMode,
) -> Result<Option<ClusterPlan>, ConfigError> {
    let Some(section) = section else {
        return Ok(None);
    };
    let span = section.span();
    let ClusterMode::Partitioned = section.get_ref().mode;
    let Some(n) = &section.get_ref().partitions else {
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

/// The AMQP source of a pipeline, consuming its partition queues in mode `partitioned`.
pub fn amqp_source(
    config: &riverbed_amqp::AmqpSourceConfig,
    cluster: Option<ClusterPlan>,
) -> riverbed_amqp::Result<riverbed_amqp::AmqpSource> {
    match cluster {
        Some(ClusterPlan::Partitioned(n)) => {
            riverbed_amqp::AmqpSource::partitioned(config.clone(), n)
        }
        None => riverbed_amqp::AmqpSource::new(config.clone()),
    }
}
