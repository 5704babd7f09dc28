//! Processors and sinks of a pipeline file, checked one by one.

use std::num::NonZeroUsize;
use std::sync::Arc;

use riverbed_core::BatchSettings;
use riverbed_sql::ValueSource;
use toml::Spanned;

use super::check::{Checker, ProcessorPlan, SinkPlan, SinkPlanKind};
use super::load::ConfigError;
use super::raw::*;

pub(super) fn check_processor(
    c: &Checker<'_>,
    p: &ProcessorEntry,
    sinks: &[SinkPlan],
) -> Result<ProcessorPlan, ConfigError> {
    Ok(match &p.kind {
        ProcessorKind::Aggregate(a) => {
            let restore_from = match &a.restore_from {
                None => None,
                Some(name) => Some(check_restore(c, name, sinks)?),
            };
            ProcessorPlan::Aggregate {
                name: p.name.clone().unwrap_or_else(|| "aggregate".into()),
                field: c.pointer(&a.field, "field")?,
                output: a.output.clone(),
                restore_from,
                position_from: match &a.position_from {
                    Some(f) => Some(c.pointer(f, "position_from")?),
                    None => None,
                },
            }
        }
        ProcessorKind::Filter(f) => ProcessorPlan::Filter {
            name: p.name.clone().unwrap_or_else(|| "filter".into()),
            field: c.pointer(&f.field, "field")?,
            equals: f.equals.clone(),
            negate: f.negate,
        },
    })
}

/// The columns an aggregate's state is restored from.
pub const RESTORE_FIELDS: [&str; 6] = ["/key", "/count", "/sum", "/min", "/max", "/last_position"];

fn check_restore(
    c: &Checker<'_>,
    name: &Spanned<String>,
    sinks: &[SinkPlan],
) -> Result<usize, ConfigError> {
    let Some(i) = sinks.iter().position(|s| &s.name == name.get_ref()) else {
        return c.err(
            name.span(),
            format!("`restore_from`: no sink is named `{}`", name.get_ref()),
        );
    };
    let SinkPlanKind::Sqlite { spec, .. } = &sinks[i].kind else {
        return c.err(
            name.span(),
            format!(
                "`restore_from`: sink `{}` is not a SQL table",
                name.get_ref()
            ),
        );
    };
    for f in RESTORE_FIELDS {
        if !spec
            .columns
            .iter()
            .any(|col| col.from == ValueSource::Pointer(f.into()))
        {
            return c.err(
                name.span(),
                format!(
                    "`restore_from`: table of sink `{}` has no column from \"{f}\"",
                    name.get_ref()
                ),
            );
        }
    }
    Ok(i)
}

pub(super) fn check_sink(
    c: &Checker<'_>,
    _i: usize,
    s: &SinkEntry,
) -> Result<SinkPlan, ConfigError> {
    let batch = match &s.batch {
        None => None,
        Some(b) => {
            let size = match &b.max_size {
                Some(v) => c.nonzero(v, "batch.max_size")?,
                None => NonZeroUsize::new(500).expect("500 is not zero"),
            };
            Some(BatchSettings {
                max_size: size,
                max_wait: b.max_wait.unwrap_or(std::time::Duration::ZERO),
                coalesce: b.coalesce,
            })
        }
    };
    let redis = match &s.kind {
        SinkKind::RedisHashIncr(r) => r.redis.check(),
        SinkKind::RedisLatest(r) => r.redis.check(),
        _ => Ok(()),
    };
    if let Err(e) = redis {
        return c.err(s.name.span(), format!("sink `{}`: {e}", s.name.get_ref()));
    }
    let kind = match &s.kind {
        SinkKind::Sqlite(q) => SinkPlanKind::Sqlite {
            path: q.path.clone(),
            spec: Arc::new(super::table::check_table(c, q)?),
            offsets: q.offsets.as_ref().map(|o| o.get_ref().clone()),
        },
        SinkKind::Stdout(l) => SinkPlanKind::Stdout {
            envelope: l.envelope,
        },
        SinkKind::File(f) => SinkPlanKind::File {
            path: f.path.clone(),
            envelope: f.envelope,
        },
        SinkKind::Noop(_) => SinkPlanKind::Noop,
        SinkKind::Postgres(p) => {
            let checked = match p.mode {
                riverbed_sql::SinkMode::Inbox if p.statement.is_none() => {
                    Err("mode \"inbox\" needs `statement`".to_owned())
                }
                riverbed_sql::SinkMode::Inbox => Ok(()),
                _ => p.table_spec().map(|_| ()).map_err(|e| e.to_string()),
            }
            .and_then(|()| p.totals_spec().map(drop).map_err(|e| e.to_string()))
            .and_then(|()| p.connection.options().map(drop).map_err(|e| e.to_string()));
            if let Err(e) = checked {
                return c.err(s.name.span(), format!("sink `{}`: {e}", s.name.get_ref()));
            }
            SinkPlanKind::Postgres(p.clone())
        }
        SinkKind::RedisHashIncr(r) => SinkPlanKind::RedisHashIncr(r.clone()),
        SinkKind::RedisLatest(r) => SinkPlanKind::RedisLatest(r.clone()),
        SinkKind::Amqp(a) => {
            if let Err(e) = riverbed_amqp::AmqpSink::new((**a).clone()) {
                return c.err(s.name.span(), format!("sink `{}`: {e}", s.name.get_ref()));
            }
            SinkPlanKind::Amqp(a.clone())
        }
        SinkKind::Nats(n) => {
            if let Err(e) = riverbed_nats::NatsSink::new((**n).clone()) {
                return c.err(s.name.span(), format!("sink `{}`: {e}", s.name.get_ref()));
            }
            SinkPlanKind::Nats(n.clone())
        }
        SinkKind::Http(h) => {
            if let Err(e) = riverbed_http::HttpSink::new(s.name.get_ref(), (**h).clone()) {
                return c.err(s.name.span(), format!("sink `{}`: {e}", s.name.get_ref()));
            }
            SinkPlanKind::Http(h.clone())
        }
    };
    Ok(SinkPlan {
        name: s.name.get_ref().clone(),
        input: s
            .input
            .as_ref()
            .map(|i| i.get_ref().clone())
            .unwrap_or_else(|| "main".into()),
        batch,
        kind,
    })
}
