//! `mode = "redundant"`: every instance consumes its own copy; the dedup store picks the one
//! that writes each message.

use std::time::Duration;

use riverbed_core::ClaimId;
use serde::Deserialize;

use super::super::check::{Checker, SinkPlan, SinkPlanKind};
use super::super::load::ConfigError;
use super::super::raw::SourceKind;
use super::ClusterSection;

/// `cluster.dedup`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DedupSection {
    /// The Redis holding the claims: the first instance to claim a message id (`SET NX PX`)
    /// writes the message; the others wait until it is done and settle their copy unwritten.
    pub redis: Option<riverbed_redis::RedisConfig>,
    /// Deduplicate by the sinks themselves: every sink is a PostgreSQL `inbox`, which records
    /// the message id in the same transaction as the statement's effects, so concurrent
    /// copies of one message commit once.
    #[serde(default)]
    pub inbox: bool,
    /// Where a message's id comes from: `$message_id` (the default) or a JSON pointer.
    #[serde(default = "default_id")]
    pub id: String,
    /// A claim left by an instance that died before finishing expires after this long, and
    /// another instance writes the message: longer than the slowest write.
    #[serde(default = "default_claim_ttl", with = "humantime_serde")]
    pub claim_ttl: Duration,
    /// How long a written message's id is remembered: longer than the copies of one message
    /// can arrive apart (the longest time an instance can lag behind the others).
    #[serde(default = "default_ttl", with = "humantime_serde")]
    pub ttl: Duration,
}

fn default_id() -> String {
    "$message_id".into()
}
fn default_claim_ttl() -> Duration {
    Duration::from_secs(30)
}
fn default_ttl() -> Duration {
    Duration::from_secs(24 * 3600)
}

/// A checked `mode = "redundant"`.
#[derive(Debug, Clone)]
pub struct RedundantPlan {
    /// The name the instances share (the claims' namespace).
    pub name: String,
    /// How they deduplicate.
    pub dedup: DedupPlan,
}

/// How redundant instances deduplicate.
#[derive(Debug, Clone)]
pub enum DedupPlan {
    /// Claims on Redis, per sink.
    Redis {
        /// Where.
        config: riverbed_redis::RedisConfig,
        /// The id of a message.
        id: ClaimId,
        /// Claim expiry.
        claim_ttl: Duration,
        /// Done-mark expiry.
        ttl: Duration,
    },
    /// Every sink is a PostgreSQL inbox.
    Inbox,
}

impl RedundantPlan {
    /// The claim key prefix of sink `sink`.
    pub fn prefix(&self, sink: &str) -> String {
        format!("riverbed:claims:{}:{sink}:", self.name)
    }
}

/// Checks mode `redundant` against the source and the sinks.
pub(super) fn check(
    c: &Checker<'_>,
    span: std::ops::Range<usize>,
    cluster: &ClusterSection,
    source: &SourceKind,
    sinks: &[SinkPlan],
) -> Result<RedundantPlan, ConfigError> {
    if cluster.partitions.is_some() {
        return c.err(span, "`cluster.partitions` is for mode = \"partitioned\"");
    }
    if cluster.postgres.is_some() || cluster.redis.is_some() {
        return c.err(
            span,
            "`cluster.postgres` and `cluster.redis` hold a singleton lease; mode = \"redundant\" \
             takes its store in `cluster.dedup`",
        );
    }
    let Some(name) = cluster
        .name
        .as_ref()
        .filter(|n| !n.get_ref().trim().is_empty())
    else {
        return c.err(
            span,
            "mode = \"redundant\" needs `cluster.name`, the namespace of its instances' claims",
        );
    };
    let own_copy = matches!(source, SourceKind::Amqp(a) if a.queue.is_empty() || a.exclusive);
    if !own_copy {
        return c.err(
            span,
            "mode = \"redundant\": every instance consumes its own copy, so the source must be \
             an `amqp` exclusive, server-named queue (`queue = \"\"`, `exclusive = true`) bound \
             to the exchange; for one shared queue use mode = \"singleton\" or \"partitioned\"",
        );
    }
    let Some(dedup) = &cluster.dedup else {
        return c.err(
            span,
            "mode = \"redundant\" needs `cluster.dedup = { redis = { url = \"redis://...\" } }` \
             or `{ inbox = true }`: without it every instance writes every message",
        );
    };
    let d = dedup.get_ref();
    let dedup = match (&d.redis, d.inbox) {
        (Some(r), false) => {
            if let Err(e) = r.check() {
                return c.err(dedup.span(), format!("`cluster.dedup.redis`: {e}"));
            }
            if d.claim_ttl < Duration::from_secs(1) || d.ttl <= d.claim_ttl {
                return c.err(
                    dedup.span(),
                    "`cluster.dedup`: `claim_ttl` must be at least 1s and `ttl` longer than it",
                );
            }
            let id = match d.id.as_str() {
                "$message_id" => ClaimId::MessageId,
                p if p.starts_with('/') => ClaimId::Pointer(p.to_owned()),
                other => {
                    return c.err(
                        dedup.span(),
                        format!(
                            "`cluster.dedup.id` is `$message_id` or a JSON pointer, not `{other}`"
                        ),
                    );
                }
            };
            DedupPlan::Redis {
                config: r.clone(),
                id,
                claim_ttl: d.claim_ttl,
                ttl: d.ttl,
            }
        }
        (None, true) => {
            let not_inbox = sinks.iter().find(|s| {
                !matches!(&s.kind, SinkPlanKind::Postgres(p) if p.mode == riverbed_sql::SinkMode::Inbox)
            });
            if let Some(s) = not_inbox {
                return c.err(
                    dedup.span(),
                    format!(
                        "`cluster.dedup.inbox`: sink `{}` is not a PostgreSQL inbox, so copies \
                         of a message would be written twice; use `dedup.redis`",
                        s.name
                    ),
                );
            }
            DedupPlan::Inbox
        }
        _ => {
            return c.err(
                dedup.span(),
                "`cluster.dedup` takes either `redis = { url = ... }` or `inbox = true`",
            );
        }
    };
    if let SourceKind::Amqp(a) = source
        && let Err(e) = riverbed_amqp::AmqpSource::new((**a).clone())
    {
        return c.err(span, format!("`source`: {e}"));
    }
    Ok(RedundantPlan {
        name: name.get_ref().clone(),
        dedup,
    })
}
