//! The `hash_incr` sink: `HINCRBY` / `HINCRBYFLOAT` of a hash field per message.
//!
//! An increment is not idempotent: a message redelivered after its increment was applied
//! (the answer was lost with the connection, the pipeline crashed before acknowledging) would
//! be counted twice. With dedup on (the default), each message's id is marked in Redis by the
//! same atomic script that counts it (see [`crate::incr_script`]), so a retried or redelivered
//! message is skipped. A Redis that restarts without persistence loses markers and counters
//! together; counters that must survive that come from committed data (see [`crate::window`]).
//!
//! # Markers
//! The default marker prefix is `riverbed:seen:<identity>:`, where the identity is a short
//! hash of the sink's `key`, `field` and `amount`: two counters over the same messages (a
//! count and a sum) keep separate markers, while instances running the same sink (redundant
//! consumers) share them and count each message once.
//!
//! **Upgrading**: this default changed in this version; earlier versions used
//! `riverbed:seen:<message id>`. Messages an older version counted but had not acknowledged
//! when it stopped are redelivered to the new version, which does not find their markers:
//! they may be counted once more. To keep the old markers, set `dedup.prefix =
//! "riverbed:seen:"` (two counters over the same messages then need distinct prefixes).
//!
//! A marker must outlive every redelivery of its message: after a crash RabbitMQ redelivers
//! the unacknowledged messages (up to the in-flight limit) as soon as a consumer is back, so
//! the TTL must exceed the longest outage, crash loop included; a broker-delayed retry comes
//! back after its delay. The default stays a day: an expired marker turns a redelivery into a
//! silent double count, while marker memory is visible and bounded. That memory is about
//! 110-140 bytes per marker on Redis 7 (measured by `riverbed-bench`'s `examples/ledger_bench`), i.e. rate x TTL
//! x ~125 B: ~1 GB a day at 100 messages/s, ~11 GB at 1000/s. At high rates size Redis for
//! it or lower `dedup.ttl` to the longest outage the deployment must survive (an hour at
//! 1000/s is ~450 MB). A message redriven from the dead-letter queue after its marker expired
//! (dead-lettered because another sink refused it, after this one counted it) is counted
//! again: redrive such messages to the sinks that refused them only.
//!
//! # Without dedup
//! With `dedup.enabled = false` nothing guards redelivery: a message whose answer was lost is
//! counted again when retried. A refused increment (`WRONGTYPE`) still never double counts:
//! the script reports the refused group and the rest of the batch is sent once (no split).
//! Errors that are not the group's (`READONLY` during a failover, `OOM`, `MISCONF`,
//! `NOREPLICAS`) are classified like any other Redis error: retried, never dead-lettered.
//!
//! Do not seed a `hash_incr` counter from PostgreSQL (reconciliation) while messages that
//! PostgreSQL already committed may still be redelivered: their increments would run once
//! more on top of totals that already hold them. Totals that must equal the committed data
//! exactly come from [`crate::WindowCounter`].

use async_trait::async_trait;
use redis::Script;
use redis::aio::ConnectionManager;
use riverbed_core::{BatchOutcome, Failure, Message, Outcome, Sink};
use serde_json::Value;

use crate::config::{Amount, HashIncrConfig};
use crate::error::{Error, Result, classify, server_error};
use crate::field::{Field, KeyTemplate, body};
use crate::incr_script::{Call, Increment, Reply, SCRIPT};

/// How messages are deduplicated.
#[derive(Debug, Clone)]
struct Dedup {
    id: Field,
    ttl_ms: u64,
    prefix: String,
}

/// Increments a hash field per message; see the module docs for redelivery.
pub struct HashIncrSink {
    name: String,
    conn: ConnectionManager,
    key: KeyTemplate,
    field: Field,
    amount: Field,
    kind: Amount,
    dedup: Option<Dedup>,
    script: Script,
}

/// The default marker prefix of a sink: `riverbed:seen:<8 hex digits>:`, a stable hash
/// (FNV-1a) of what the sink counts.
pub fn default_marker_prefix(c: &HashIncrConfig) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in [&c.key, "\n", &c.field, "\n", &c.amount].concat().bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("riverbed:seen:{:08x}:", (h ^ (h >> 32)) as u32)
}

impl HashIncrSink {
    /// Connects and builds the sink named `name`.
    pub async fn from_config(name: &str, c: &HashIncrConfig) -> Result<Self> {
        let bad = |what: &str, e: String| Error::Config(format!("{what}: {e}"));
        let key: KeyTemplate = c.key.parse().map_err(|e| bad("key", e))?;
        let field: Field = c.field.parse().map_err(|e| bad("field", e))?;
        let amount: Field = c.amount.parse().map_err(|e| bad("amount", e))?;
        if !matches!(amount, Field::Pointer(_)) {
            return Err(bad("amount", "must be a JSON pointer".into()));
        }
        let dedup = match c.dedup.enabled {
            true => Some(Dedup {
                id: c.dedup.id.parse().map_err(|e| bad("dedup.id", e))?,
                ttl_ms: c.dedup.ttl.as_millis().max(1) as u64,
                prefix: c
                    .dedup
                    .prefix
                    .clone()
                    .unwrap_or_else(|| default_marker_prefix(c)),
            }),
            false => None,
        };
        let conn = c.redis.connect().await?;
        tracing::info!(sink = name, url = %c.redis.url, dedup = dedup.is_some(), prefix = dedup.as_ref().map(|d| d.prefix.as_str()), "Redis hash_incr sink ready");
        Ok(HashIncrSink {
            name: name.to_owned(),
            conn,
            key,
            field,
            amount,
            kind: c.kind,
            script: Script::new(SCRIPT),
            dedup,
        })
    }

    fn increment(&self, msg: &Message) -> Result<Increment, Failure> {
        let body = body(msg)?;
        let (amount, integer) = amount_text(self.amount.json(&body), self.kind)?;
        let marker = match &self.dedup {
            Some(d) => Some(format!("{}{}", d.prefix, d.id.text(msg, &body)?)),
            None => None,
        };
        Ok(Increment {
            hash: self.key.render(msg, &body)?,
            field: self.field.text(msg, &body)?,
            amount,
            integer,
            marker,
        })
    }

    /// Sends `todo` (indexes into `items`) until every one has an outcome: a refused group is
    /// permanent for its messages and the later groups are sent again; any other error is
    /// classified (see [`outcome_of`]) for the messages not applied. Returns how many
    /// messages were counted.
    async fn send(&self, items: &[Increment], todo: Vec<usize>, out: &mut [Outcome]) -> u64 {
        let mut todo = todo;
        let mut applied = 0;
        let ttl = self.dedup.as_ref().map(|d| d.ttl_ms);
        let float = self.kind == Amount::Float;
        while !todo.is_empty() {
            let refs: Vec<&Increment> = todo.iter().map(|i| &items[*i]).collect();
            let call = Call::new(&self.script, &refs, ttl, float);
            let mut conn = self.conn.clone();
            // The failed group; its messages' outcome; whether later groups are sent again.
            let (group, outcome, resend, n) = match call.run(&mut conn).await {
                Ok(Reply::Applied(n)) => return applied + n,
                Ok(Reply::Refused {
                    group,
                    error,
                    applied,
                }) => {
                    let refused = Outcome::Permanent(Failure::rejected(error));
                    (group, refused, true, applied)
                }
                Ok(Reply::Failed {
                    group,
                    error,
                    applied,
                }) => (group, outcome_of(&server_error(&error)), false, applied),
                Err(e) => (0, outcome_of(&e), false, 0),
            };
            applied += n;
            let mut later = Vec::new();
            for (n, i) in todo.iter().enumerate() {
                match call.group_of(n).cmp(&group) {
                    std::cmp::Ordering::Less => {}
                    std::cmp::Ordering::Greater if resend => later.push(*i),
                    _ => out[*i] = outcome.clone(),
                }
            }
            todo = later;
        }
        applied
    }
}

/// The outcome of the messages a Redis error stopped: transient errors (a failover's
/// `READONLY`, `OOM`, `MISCONF`...) are retried, others refuse the messages.
fn outcome_of(e: &redis::RedisError) -> Outcome {
    classify(e).into_outcome()
}

/// The amount as the text Redis parses, checked: an integer for `HINCRBY` (with its value),
/// a finite number for `HINCRBYFLOAT`.
fn amount_text(v: Option<&Value>, kind: Amount) -> Result<(String, Option<i64>), Failure> {
    let text = match v {
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => s.trim().to_owned(),
        other => {
            return Err(Failure::new(
                "invalid_field",
                format!("amount is not a number: {other:?}"),
            ));
        }
    };
    let invalid = || {
        Failure::new(
            "invalid_field",
            format!("amount `{text}` is not a valid {kind:?}"),
        )
    };
    match kind {
        Amount::Integer => {
            let n: i64 = text.parse().map_err(|_| invalid())?;
            Ok((n.to_string(), Some(n)))
        }
        Amount::Float if text.parse::<f64>().is_ok_and(f64::is_finite) => Ok((text, None)),
        Amount::Float => Err(invalid()),
    }
}

#[async_trait]
impl Sink for HashIncrSink {
    async fn write(&self, batch: &[Message]) -> BatchOutcome {
        let mut outcomes = vec![Outcome::Ok; batch.len()];
        let mut items = Vec::with_capacity(batch.len());
        let mut index = Vec::with_capacity(batch.len());
        for (i, m) in batch.iter().enumerate() {
            match self.increment(m) {
                Ok(inc) => {
                    items.push(inc);
                    index.push(i);
                }
                Err(f) => outcomes[i] = Outcome::Permanent(f),
            }
        }
        let mut results = vec![Outcome::Ok; items.len()];
        let applied = self
            .send(&items, (0..items.len()).collect(), &mut results)
            .await;
        let committed = results.iter().filter(|o| o.is_ok()).count() as u64;
        metrics::counter!("riverbed_redis_increments_total", "sink" => self.name.clone())
            .increment(applied);
        if committed > applied {
            metrics::counter!("riverbed_redis_duplicates_skipped_total", "sink" => self.name.clone())
                .increment(committed - applied);
        }
        for (o, i) in results.into_iter().zip(index) {
            outcomes[i] = o;
        }
        if outcomes.iter().all(Outcome::is_ok) {
            BatchOutcome::Committed
        } else {
            BatchOutcome::Each(outcomes)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Errors an increment meets that are not its group's: a failover, memory, persistence,
    /// replicas. None of them may dead-letter the messages.
    const NOT_THE_GROUPS: [&str; 4] = [
        "READONLY You can't write against a read only replica.",
        "OOM command not allowed when used memory > 'maxmemory'.",
        "MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist to disk.",
        "NOREPLICAS Not enough good replicas to write.",
    ];

    #[test]
    fn script_errors_that_are_not_the_groups_are_retried() {
        for text in NOT_THE_GROUPS {
            // Returned whole by the script: what the client parses from the wire.
            let wire = redis::parse_redis_value(format!("-{text}\r\n").as_bytes())
                .and_then(redis::Value::extract_error)
                .expect_err("an error reply");
            assert!(
                matches!(outcome_of(&wire), Outcome::Unavailable(_)),
                "{text}"
            );
            // Reported with the group (after earlier groups were applied).
            let reported = outcome_of(&server_error(text));
            assert!(matches!(reported, Outcome::Unavailable(_)), "{text}");
        }
        let wrongtype = server_error("WRONGTYPE Operation against a key holding the wrong kind");
        assert!(matches!(outcome_of(&wrongtype), Outcome::Permanent(_)));
    }

    #[test]
    fn amounts_are_checked_for_their_kind() {
        let j = serde_json::json!({"a": 12.5, "b": "7", "c": "x", "d": 3});
        let text = |v, k| amount_text(v, k).map(|(t, _)| t);
        assert_eq!(text(j.get("a"), Amount::Float).unwrap(), "12.5");
        assert!(text(j.get("a"), Amount::Integer).is_err());
        assert_eq!(
            amount_text(j.get("b"), Amount::Integer).unwrap(),
            ("7".into(), Some(7))
        );
        assert!(text(j.get("c"), Amount::Float).is_err());
        assert!(text(j.get("missing"), Amount::Float).is_err());
        assert_eq!(text(j.get("d"), Amount::Integer).unwrap(), "3");
        let plus = serde_json::json!({"n": "+5"});
        assert_eq!(
            text(plus.get("n"), Amount::Integer).unwrap(),
            "5",
            "as Redis parses it"
        );
    }
}
