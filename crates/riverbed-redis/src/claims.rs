//! The claim store of redundant instances on Redis: `SET NX PX` per message id, marked done
//! once written. See [`riverbed_core::claims`] for how the claims keep each message written once.

use std::time::Duration;

use async_trait::async_trait;
use redis::Script;
use redis::aio::ConnectionManager;
use riverbed_core::{Claim, ClaimStore, Failure};

use crate::config::RedisConfig;
use crate::error::Result;

/// Claims ids in order and stops after the first one another owner holds.
/// KEYS: claim keys. ARGV: owner, claim ttl (ms). Answers 1 won, 2 done, 3 busy per key.
const CLAIM: &str = r#"
local out = {}
local mine = 'c:' .. ARGV[1]
for i, k in ipairs(KEYS) do
  local v = redis.call('GET', k)
  if not v then
    redis.call('SET', k, mine, 'PX', ARGV[2])
    out[i] = 1
  elseif v == 'done' then
    out[i] = 2
  elseif v == mine then
    redis.call('PEXPIRE', k, ARGV[2])
    out[i] = 1
  else
    out[i] = 3
    return out
  end
end
return out
"#;

/// Claims of one redundant pipeline, shared by its instances through Redis.
pub struct RedisClaims {
    conn: ConnectionManager,
    prefix: String,
    owner: String,
    claim_ttl: Duration,
    done_ttl: Duration,
    script: Script,
}

impl RedisClaims {
    /// Connects; keys are `<prefix><id>`, a claim expires after `claim_ttl` (an instance that
    /// died holding it), a done mark after `done_ttl` (longer than any redelivery can take).
    pub async fn connect(
        config: &RedisConfig,
        prefix: &str,
        claim_ttl: Duration,
        done_ttl: Duration,
    ) -> Result<Self> {
        Ok(RedisClaims {
            conn: config.connect().await?,
            prefix: prefix.to_owned(),
            owner: crate::lease::instance_id(),
            claim_ttl,
            done_ttl,
            script: Script::new(CLAIM),
        })
    }

    fn key(&self, id: &str) -> String {
        format!("{}{id}", self.prefix)
    }
}

fn unreachable(e: redis::RedisError) -> Failure {
    Failure::unavailable(format!("claim store: {e}"))
}

#[async_trait]
impl ClaimStore for RedisClaims {
    async fn claim(&self, ids: &[String]) -> std::result::Result<Vec<Claim>, Failure> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut inv = self.script.prepare_invoke();
        ids.iter().for_each(|id| {
            inv.key(self.key(id));
        });
        inv.arg(&self.owner).arg(self.claim_ttl.as_millis() as u64);
        let mut conn = self.conn.clone();
        let answers: Vec<u8> = inv.invoke_async(&mut conn).await.map_err(unreachable)?;
        Ok(answers
            .into_iter()
            .map(|a| match a {
                1 => Claim::Won,
                2 => Claim::Done,
                _ => Claim::Busy,
            })
            .collect())
    }

    async fn complete(&self, ids: &[String]) -> std::result::Result<(), Failure> {
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("SET")
                .arg(self.key(id))
                .arg("done")
                .arg("PX")
                .arg(self.done_ttl.as_millis() as u64)
                .ignore();
        }
        let mut conn = self.conn.clone();
        pipe.query_async::<()>(&mut conn).await.map_err(unreachable)
    }
}
