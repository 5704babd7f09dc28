//! The `latest` sink: the newest state of each entity, by version, in a hash per key
//! (`version`, `value`, `deleted`). One Lua script per batch compares versions inside Redis,
//! so stale and duplicate updates are skipped whatever order they arrive in, and a delete
//! leaves a tombstone that an older, late update cannot undo (on equal versions a delete wins).

use async_trait::async_trait;
use redis::Script;
use redis::aio::ConnectionManager;
use riverbed_core::{BatchOutcome, Failure, Message, Outcome, Sink};
use serde_json::Value;

use crate::batch::write_isolating;
use crate::config::LatestConfig;
use crate::error::{Error, Result};
use crate::field::{Field, KeyTemplate, body};

const LATEST_SCRIPT: &str = r"
local applied = 0
for i = 1, #KEYS do
  local v = tonumber(ARGV[3 * i - 2])
  local del = ARGV[3 * i] == '1'
  local cur = redis.call('HMGET', KEYS[i], 'version', 'deleted')
  local cv = tonumber(cur[1])
  if cv == nil or cv < v or (cv == v and del and cur[2] ~= '1') then
    if del then
      redis.call('HSET', KEYS[i], 'version', ARGV[3 * i - 2], 'deleted', '1')
      redis.call('HDEL', KEYS[i], 'value')
    else
      redis.call('HSET', KEYS[i], 'version', ARGV[3 * i - 2], 'value', ARGV[3 * i - 1], 'deleted', '0')
    end
    applied = applied + 1
  end
end
return applied
";

/// Versions are compared as Lua numbers: integers up to 2^53 are exact.
const MAX_VERSION: i64 = 1 << 53;

/// One state update, ready to send.
struct Update {
    key: String,
    version: i64,
    value: String,
    deleted: bool,
}

/// Keeps the newest state per key; see the module docs.
pub struct LatestSink {
    name: String,
    conn: ConnectionManager,
    key: KeyTemplate,
    version: String,
    value: Option<String>,
    delete: Option<(String, String)>,
    script: Script,
}

impl LatestSink {
    /// Connects and builds the sink named `name`.
    pub async fn from_config(name: &str, c: &LatestConfig) -> Result<Self> {
        let bad = |what: &str, e: String| Error::Config(format!("{what}: {e}"));
        let pointer = |what: &str, p: &str| match p.parse::<Field>() {
            Ok(Field::Pointer(p)) => Ok(p),
            _ => Err(bad(what, format!("`{p}` must be a JSON pointer"))),
        };
        let key: KeyTemplate = c.key.parse().map_err(|e| bad("key", e))?;
        let version = pointer("version", &c.version)?;
        let value = c
            .value
            .as_deref()
            .map(|v| pointer("value", v))
            .transpose()?;
        let delete = match &c.delete {
            Some(d) => Some((pointer("delete.field", &d.field)?, d.value.clone())),
            None => None,
        };
        let conn = c.redis.connect().await?;
        Ok(LatestSink {
            name: name.to_owned(),
            conn,
            key,
            version,
            value,
            delete,
            script: Script::new(LATEST_SCRIPT),
        })
    }

    fn update(&self, msg: &Message) -> Result<Update, Failure> {
        let body = body(msg)?;
        let version = match riverbed_core::json_pointer(&body, &self.version) {
            Some(Value::Number(n)) => n.as_i64(),
            Some(Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        }
        .filter(|v| v.abs() <= MAX_VERSION)
        .ok_or_else(|| {
            Failure::new(
                "invalid_field",
                format!("no integer version (|v| <= 2^53) at {}", self.version),
            )
        })?;
        let deleted = self.delete.as_ref().is_some_and(|(p, v)| {
            riverbed_core::json_pointer(&body, p).and_then(Value::as_str) == Some(v)
        });
        let value = match &self.value {
            _ if deleted => String::new(),
            None => String::from_utf8_lossy(&msg.payload).into_owned(),
            Some(p) => match riverbed_core::json_pointer(&body, p) {
                Some(Value::String(s)) => s.clone(),
                Some(v) => v.to_string(),
                None => return Err(Failure::new("missing_field", format!("no value at {p}"))),
            },
        };
        Ok(Update {
            key: self.key.render(msg, &body)?,
            version,
            value,
            deleted,
        })
    }

    async fn call(&self, items: &[&Update]) -> redis::RedisResult<u64> {
        let mut inv = self.script.prepare_invoke();
        for u in items {
            inv.key(&u.key)
                .arg(u.version)
                .arg(&u.value)
                .arg(if u.deleted { "1" } else { "0" });
        }
        let mut conn = self.conn.clone();
        inv.invoke_async(&mut conn).await
    }
}

#[async_trait]
impl Sink for LatestSink {
    async fn write(&self, batch: &[Message]) -> BatchOutcome {
        let mut outcomes = vec![Outcome::Ok; batch.len()];
        let mut items = Vec::with_capacity(batch.len());
        let mut index = Vec::with_capacity(batch.len());
        for (i, m) in batch.iter().enumerate() {
            match self.update(m) {
                Ok(u) => {
                    items.push(u);
                    index.push(i);
                }
                Err(f) => outcomes[i] = Outcome::Permanent(f),
            }
        }
        let (results, applied) = write_isolating(items.len(), |r| {
            let slice: Vec<&Update> = items[r].iter().collect();
            async move { self.call(&slice).await }
        })
        .await;
        let committed = results.iter().filter(|o| o.is_ok()).count() as u64;
        metrics::counter!("riverbed_redis_latest_applied_total", "sink" => self.name.clone())
            .increment(applied);
        if committed > applied {
            metrics::counter!("riverbed_redis_stale_skipped_total", "sink" => self.name.clone())
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
