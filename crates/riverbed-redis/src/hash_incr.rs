//! The `hash_incr` sink: `HINCRBY` / `HINCRBYFLOAT` of a hash field per message.
//!
//! An increment is not idempotent: a message redelivered after its increment was applied
//! (the answer was lost with the connection, the pipeline crashed before acknowledging) would
//! be counted twice. With dedup on (the default), each batch runs one Lua script that, per
//! message, checks a marker key for its id, increments, and sets the marker with a TTL — all
//! in one atomic script, so a retried or redelivered message is skipped. Markers must outlive
//! any redelivery (`ttl`, a day by default). A Redis that restarts without persistence loses
//! markers and counters together; counters that must survive that come from committed data
//! (see [`crate::window`]).
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

use crate::batch::write_isolating;
use crate::config::{Amount, HashIncrConfig};
use crate::error::{Error, Result};
use crate::field::{Field, KeyTemplate, body};

const DEDUP_SCRIPT: &str = r"
local ttl = ARGV[1]
local float = ARGV[2] == 'float'
local applied = 0
for n = 0, #KEYS / 2 - 1 do
  local hash, marker = KEYS[2 * n + 1], KEYS[2 * n + 2]
  if redis.call('EXISTS', marker) == 0 then
    if float then
      redis.call('HINCRBYFLOAT', hash, ARGV[2 * n + 3], ARGV[2 * n + 4])
    else
      redis.call('HINCRBY', hash, ARGV[2 * n + 3], ARGV[2 * n + 4])
    end
    redis.call('SET', marker, '1', 'PX', ttl)
    applied = applied + 1
  end
end
return applied
";

const PLAIN_SCRIPT: &str = r"
local float = ARGV[1] == 'float'
for n = 1, #KEYS do
  if float then
    redis.call('HINCRBYFLOAT', KEYS[n], ARGV[2 * n], ARGV[2 * n + 1])
  else
    redis.call('HINCRBY', KEYS[n], ARGV[2 * n], ARGV[2 * n + 1])
  end
end
return #KEYS
";

/// How messages are deduplicated.
#[derive(Debug, Clone)]
struct Dedup {
    id: Field,
    ttl_ms: u64,
    prefix: String,
}

/// One increment, ready to send.
struct Increment {
    hash: String,
    field: String,
    amount: String,
    marker: Option<String>,
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
                prefix: c.dedup.prefix.clone(),
            }),
            false => None,
        };
        let conn = c.redis.connect().await?;
        tracing::info!(sink = name, url = %c.redis.url, dedup = dedup.is_some(), "Redis hash_incr sink ready");
        Ok(HashIncrSink {
            name: name.to_owned(),
            conn,
            key,
            field,
            amount,
            kind: c.kind,
            script: Script::new(if dedup.is_some() {
                DEDUP_SCRIPT
            } else {
                PLAIN_SCRIPT
            }),
            dedup,
        })
    }

    fn increment(&self, msg: &Message) -> Result<Increment, Failure> {
        let body = body(msg)?;
        let amount = amount_text(self.amount.json(&body), self.kind)?;
        let marker = match &self.dedup {
            Some(d) => Some(format!("{}{}", d.prefix, d.id.text(msg, &body)?)),
            None => None,
        };
        Ok(Increment {
            hash: self.key.render(msg, &body)?,
            field: self.field.text(msg, &body)?,
            amount,
            marker,
        })
    }

    async fn call(&self, items: &[&Increment]) -> redis::RedisResult<u64> {
        let kind = match self.kind {
            Amount::Integer => "int",
            Amount::Float => "float",
        };
        let mut inv = self.script.prepare_invoke();
        if let Some(d) = &self.dedup {
            inv.arg(d.ttl_ms);
        }
        inv.arg(kind);
        for i in items {
            inv.key(&i.hash);
            if let Some(m) = &i.marker {
                inv.key(m);
            }
            inv.arg(&i.field).arg(&i.amount);
        }
        let mut conn = self.conn.clone();
        inv.invoke_async(&mut conn).await
    }
}

/// The amount as the text Redis parses, checked: an integer for `HINCRBY`, a finite number
/// for `HINCRBYFLOAT`.
fn amount_text(v: Option<&Value>, kind: Amount) -> Result<String, Failure> {
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
    let ok = match kind {
        Amount::Integer => text.parse::<i64>().is_ok(),
        Amount::Float => text.parse::<f64>().is_ok_and(f64::is_finite),
    };
    if ok {
        Ok(text)
    } else {
        Err(Failure::new(
            "invalid_field",
            format!("amount `{text}` is not a valid {kind:?}"),
        ))
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
        let (results, applied) = write_isolating(items.len(), |r| {
            let slice: Vec<&Increment> = items[r].iter().collect();
            async move { self.call(&slice).await }
        })
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

    #[test]
    fn amounts_are_checked_for_their_kind() {
        let j = serde_json::json!({"a": 12.5, "b": "7", "c": "x", "d": 3});
        assert_eq!(amount_text(j.get("a"), Amount::Float).unwrap(), "12.5");
        assert!(amount_text(j.get("a"), Amount::Integer).is_err());
        assert_eq!(amount_text(j.get("b"), Amount::Integer).unwrap(), "7");
        assert!(amount_text(j.get("c"), Amount::Float).is_err());
        assert!(amount_text(j.get("missing"), Amount::Float).is_err());
        assert_eq!(amount_text(j.get("d"), Amount::Integer).unwrap(), "3");
    }
}
