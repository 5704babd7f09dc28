//! Redis keys written two ways: a task that writes totals from PostgreSQL (`reconcile`,
//! `window_counter`) and a `redis_hash_incr` sink that increments per message must not share
//! keys, or the messages in flight at a restart would be counted twice (once in the totals
//! taken from the committed rows, once more by their redelivered increment).

use riverbed_redis::{RedisConfig, TotalsLayout};

use super::check::{Checker, SinkPlan, SinkPlanKind};
use super::load::ConfigError;
use super::raw::{SinkEntry, TaskEntry, TaskKind};

/// Refuses a `redis_hash_incr` sink whose keys a totals task also writes.
pub(super) fn check_counters(
    c: &Checker<'_>,
    raw: &[SinkEntry],
    sinks: &[SinkPlan],
    tasks: &[TaskEntry],
) -> Result<(), ConfigError> {
    for (entry, sink) in raw.iter().zip(sinks) {
        let SinkPlanKind::RedisHashIncr(h) = &sink.kind else {
            continue;
        };
        for t in tasks {
            let Some((redis, layout)) = totals_of(&t.kind) else {
                continue;
            };
            if same_server(redis, &h.redis) && overlaps(layout.prefix(), &h.key) {
                return c.err(
                    entry.name.span(),
                    format!(
                        "sink `{}` increments keys `{}` that task `{}` also writes from \
                         PostgreSQL (prefix `{}`): messages in flight at a restart would be \
                         counted twice; give them different keys, or keep only the task",
                        sink.name,
                        h.key,
                        t.name,
                        layout.prefix()
                    ),
                );
            }
        }
    }
    Ok(())
}

fn totals_of(kind: &TaskKind) -> Option<(&RedisConfig, &TotalsLayout)> {
    match kind {
        TaskKind::WindowCounter(w) => Some((&w.redis, &w.layout)),
        TaskKind::Reconcile(r) => Some((&r.redis, &r.layout)),
        TaskKind::PipelineMetrics(_) => None,
    }
}

fn same_server(a: &RedisConfig, b: &RedisConfig) -> bool {
    a.url == b.url
}

/// Whether keys from the template `key` (literal up to its first `{`) can start with `prefix`.
/// A template that starts with a placeholder cannot be told apart: it is let through.
fn overlaps(prefix: &str, key: &str) -> bool {
    let literal = key.split('{').next().unwrap_or("");
    let whole = !key.contains('{');
    if whole {
        return key.starts_with(prefix);
    }
    !literal.is_empty() && (literal.starts_with(prefix) || prefix.starts_with(literal))
}

#[cfg(test)]
mod tests {
    use super::overlaps;

    #[test]
    fn keys_overlap_when_one_literal_prefix_contains_the_other() {
        assert!(overlaps("totals:", "totals:sum"));
        assert!(overlaps("totals:", "totals:{/provider}"));
        assert!(overlaps("totals:acme:", "totals:{/provider}"));
        assert!(!overlaps("totals:", "live:{/provider}"));
        assert!(!overlaps("totals:", "tot"));
        assert!(!overlaps("totals:", "{/provider}"));
    }
}
