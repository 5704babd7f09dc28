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
    /// per-key order holds while instances join, leave and die.
    pub mode: ClusterMode,
    /// Partition queues (mode `partitioned`): more than the instances you plan to run, so
    /// that a new instance has partitions to take.
    pub partitions: Option<Spanned<u16>>,
    /// Where the singleton lease lives (mode `singleton`): `postgres` (the default).
    #[serde(default)]
    pub lease: LeaseKind,
    /// The lease's name (mode `singleton`): instances of one pipeline share it.
    pub name: Option<Spanned<String>>,
    /// The PostgreSQL database holding the lease (mode `singleton`).
    pub postgres: Option<riverbed_sql::PostgresConnectionConfig>,
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
}

/// `cluster.lease`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseKind {
    /// A session-level advisory lock on a dedicated PostgreSQL connection.
    #[default]
    Postgres,
}

/// A checked `[cluster]` section.
#[derive(Debug, Clone)]
pub enum ClusterPlan {
    /// Consume this many partition queues.
    Partitioned(NonZeroU16),
    /// Consume only while holding this lease.
    Singleton(SingletonPlan),
}

/// A checked singleton lease.
#[derive(Debug, Clone)]
pub struct SingletonPlan {
    /// The lease's name.
    pub name: String,
    /// Where it lives.
    pub postgres: riverbed_sql::PostgresConnectionConfig,
    /// How often it is checked.
    pub check_every: std::time::Duration,
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
    let cluster = section.get_ref();
    if cluster.mode == ClusterMode::Singleton {
        return check_singleton(c, span, cluster).map(|s| Some(ClusterPlan::Singleton(s)));
    }
    if cluster.name.is_some() || cluster.postgres.is_some() {
        return c.err(
            span,
            "`cluster.name` and `cluster.postgres` are for mode = \"singleton\"",
        );
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

fn check_singleton(
    c: &Checker<'_>,
    span: std::ops::Range<usize>,
    cluster: &ClusterSection,
) -> Result<SingletonPlan, ConfigError> {
    if cluster.partitions.is_some() {
        return c.err(span, "`cluster.partitions` is for mode = \"partitioned\"");
    }
    let LeaseKind::Postgres = cluster.lease;
    let Some(name) = &cluster.name else {
        return c.err(
            span,
            "mode = \"singleton\" needs `cluster.name`, the lease its instances share",
        );
    };
    if name.get_ref().trim().is_empty() {
        return c.err(name.span(), "`cluster.name` must not be empty");
    }
    let Some(postgres) = cluster.postgres.clone() else {
        return c.err(
            span,
            "lease = \"postgres\" needs `cluster.postgres = { url = \"postgres://...\" }`",
        );
    };
    if cluster.check_every < std::time::Duration::from_millis(50) {
        return c.err(span, "`cluster.check_every` must be at least 50ms");
    }
    Ok(SingletonPlan {
        name: name.get_ref().clone(),
        postgres,
        check_every: cluster.check_every,
    })
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
        Some(ClusterPlan::Singleton(_)) | None => riverbed_amqp::AmqpSource::new(config.clone())?,
    };
    Ok(source.max_deliveries(plan.max_deliveries.get()))
}

#[cfg(test)]
mod tests {
    use super::super::load_str;
    use super::*;

    const BASE: &str = r#"
[source]
kind = "amqp"
urls = ["amqp://guest:guest@127.0.0.1:5672/%2f"]
queue = "entities"

[[sinks]]
name = "out"
kind = "noop"
"#;

    fn error(cluster: &str) -> String {
        load_str(&format!("{BASE}\n{cluster}"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn cluster_sections_are_checked_naming_the_field_and_line() {
        let plan = load_str(&format!(
            "{BASE}\n[cluster]\nmode = \"partitioned\"\npartitions = 4\n"
        ))
        .unwrap();
        assert!(matches!(plan.cluster, Some(ClusterPlan::Partitioned(n)) if n.get() == 4));
        let plan = load_str(&format!(
            "{BASE}\n[cluster]\nmode = \"singleton\"\nname = \"feed\"\npostgres = {{ url = \"postgres://u:secret@127.0.0.1/test\" }}\n"
        ))
        .unwrap();
        assert!(matches!(&plan.cluster, Some(ClusterPlan::Singleton(s)) if s.name == "feed"));
        assert!(
            !format!("{plan:?}").contains("secret"),
            "the lease URL is redacted"
        );

        let e = error("[cluster]\nmode = \"partitioned\"");
        assert!(
            e.contains("`cluster.partitions` is required") && e.contains("line 11"),
            "{e}"
        );
        let e = error("[cluster]\nmode = \"singleton\"\npostgres = { url = \"postgres://h/db\" }");
        assert!(e.contains("needs `cluster.name`"), "{e}");
        let e = error("[cluster]\nmode = \"singleton\"\nname = \"feed\"");
        assert!(e.contains("needs `cluster.postgres"), "{e}");
        let e = error("[cluster]\nmode = \"partitioned\"\npartitions = 4\npartiton = 1");
        assert!(
            e.contains("unknown field `partiton`") && e.contains("line 14"),
            "{e}"
        );
        let e = error("[cluster]\nmode = \"leaderless\"");
        assert!(e.contains("unknown variant `leaderless`"), "{e}");
        let e =
            error("[retry]\nmode = \"broker\"\n[cluster]\nmode = \"partitioned\"\npartitions = 2");
        assert!(e.contains("use `in_process`"), "{e}");
    }
}
