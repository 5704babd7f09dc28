//! `mode = "singleton"`: the lease its instances share.

use super::super::check::Checker;
use super::super::load::ConfigError;
use super::{ClusterSection, LeaseKind, LeasePlan, SingletonPlan};

/// Checks the lease of mode `singleton`.
pub(super) fn check(
    c: &Checker<'_>,
    span: std::ops::Range<usize>,
    cluster: &ClusterSection,
) -> Result<SingletonPlan, ConfigError> {
    if cluster.partitions.is_some() {
        return c.err(span, "`cluster.partitions` is for mode = \"partitioned\"");
    }
    lease(c, span, cluster, "singleton")
}

/// Checks the lease of mode `mode` (singleton, or partitioned on NATS): its name and store.
pub(super) fn lease(
    c: &Checker<'_>,
    span: std::ops::Range<usize>,
    cluster: &ClusterSection,
    mode: &str,
) -> Result<SingletonPlan, ConfigError> {
    let Some(name) = &cluster.name else {
        return c.err(
            span,
            format!("mode = \"{mode}\" needs `cluster.name`, the lease its instances share"),
        );
    };
    if name.get_ref().trim().is_empty() {
        return c.err(name.span(), "`cluster.name` must not be empty");
    }
    if cluster.dedup.is_some() {
        return c.err(span, "`cluster.dedup` is for mode = \"redundant\"");
    }
    let lease = match (cluster.lease, &cluster.postgres, &cluster.redis) {
        (LeaseKind::Postgres, Some(p), None) => LeasePlan::Postgres(p.clone()),
        (LeaseKind::Redis, None, Some(r)) => {
            if let Err(e) = r.check() {
                return c.err(span, format!("`cluster.redis`: {e}"));
            }
            LeasePlan::Redis(r.clone())
        }
        (LeaseKind::Postgres, None, _) => {
            return c.err(
                span,
                "lease = \"postgres\" needs `cluster.postgres = { url = \"postgres://...\" }`",
            );
        }
        (LeaseKind::Redis, _, None) => {
            return c.err(
                span,
                "lease = \"redis\" needs `cluster.redis = { url = \"redis://...\" }`",
            );
        }
        (LeaseKind::Postgres, _, Some(_)) => {
            return c.err(span, "`cluster.redis` is for lease = \"redis\"");
        }
        (LeaseKind::Redis, Some(_), _) => {
            return c.err(span, "`cluster.postgres` is for lease = \"postgres\"");
        }
    };
    if cluster.check_every < std::time::Duration::from_millis(50) {
        return c.err(span, "`cluster.check_every` must be at least 50ms");
    }
    Ok(SingletonPlan {
        name: name.get_ref().clone(),
        lease,
        check_every: cluster.check_every,
    })
}
