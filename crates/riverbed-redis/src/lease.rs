//! A singleton lease on Redis: `SET NX PX`, renewed by its holder, with a fencing token.
//!
//! The key holds the owner's id and expires `ttl` after its last renewal. The holder renews
//! every `check_every`; a renewal that fails, comes back late or finds another owner means the
//! lease can no longer be trusted, and the holder must stop at once. It notices within two
//! checks of its last good renewal, well before the key can expire (`ttl` is five checks), so
//! a standby that takes the expired key never consumes alongside it. Each acquisition
//! increments `<key>:fencing`: sinks can store that token and refuse writes from a lower one.

use std::time::Duration;

use redis::Script;
use redis::aio::ConnectionManager;

use crate::config::RedisConfig;
use crate::error::Result;

/// KEYS: lease key, fencing counter. ARGV: owner, ttl (ms). Answers the fencing token, or -1.
const ACQUIRE: &str = r#"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return redis.call('INCR', KEYS[2])
end
return -1
"#;

/// KEYS: lease key. ARGV: owner, ttl (ms). Answers 1 when still held and renewed.
const RENEW: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"#;

/// An id unique to this process, for lease and claim owners.
pub(crate) fn instance_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{}-{nanos:x}", std::process::id())
}

/// A singleton lease named `name`.
pub struct RedisLease {
    conn: ConnectionManager,
    key: String,
    owner: String,
    check_every: Duration,
    fencing_token: Option<u64>,
    acquire: Script,
    renew: Script,
}

impl RedisLease {
    /// The lease `riverbed:lease:<name>` on the Redis of `config`, checked every `check_every`.
    pub async fn connect(config: &RedisConfig, name: &str, check_every: Duration) -> Result<Self> {
        Ok(RedisLease {
            conn: config.connect().await?,
            key: format!("riverbed:lease:{name}"),
            owner: instance_id(),
            check_every,
            fencing_token: None,
            acquire: Script::new(ACQUIRE),
            renew: Script::new(RENEW),
        })
    }

    /// How long the key outlives its last renewal: five checks.
    pub fn ttl(&self) -> Duration {
        self.check_every * 5
    }

    /// The token of this holder's acquisition, larger than every earlier holder's.
    pub fn fencing_token(&self) -> Option<u64> {
        self.fencing_token
    }

    /// Tries once to take the lease; true when this instance holds it now.
    pub async fn try_acquire(&mut self) -> Result<bool> {
        if self.fencing_token.is_some() {
            return Ok(true);
        }
        let mut conn = self.conn.clone();
        let token: i64 = self
            .acquire
            .key(&self.key)
            .key(format!("{}:fencing", self.key))
            .arg(&self.owner)
            .arg(self.ttl().as_millis() as u64)
            .invoke_async(&mut conn)
            .await?;
        self.fencing_token = u64::try_from(token).ok();
        Ok(self.fencing_token.is_some())
    }

    /// Renews the lease every `check_every`; completes, saying why, when a renewal fails,
    /// is late or finds the key gone or taken.
    pub async fn lost(&mut self) -> String {
        if self.fencing_token.is_none() {
            return "the lease is not held".into();
        }
        loop {
            tokio::time::sleep(self.check_every).await;
            let mut conn = self.conn.clone();
            let mut renew = self.renew.key(&self.key);
            renew.arg(&self.owner).arg(self.ttl().as_millis() as u64);
            let call = renew.invoke_async::<i64>(&mut conn);
            match tokio::time::timeout(self.check_every, call).await {
                Ok(Ok(1)) => {}
                Ok(Ok(_)) => return "the lease expired or another instance holds it".into(),
                Ok(Err(e)) => return format!("renewing the lease failed: {e}"),
                Err(_) => return "renewing the lease did not answer in time".into(),
            }
        }
    }
}
