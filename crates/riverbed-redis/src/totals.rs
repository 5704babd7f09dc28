//! Totals derived from committed data: the groups of a [`TotalsSource`] (in the daemon, a
//! PostgreSQL totals table or query) written to Redis in one script with `HSET` (absolute
//! values, never increments), so writing them again — after a crash, a restart of Redis, a
//! retry — can never count anything twice. Startup reconciliation is one such write; the
//! window counter repeats it at every boundary.
//!
//! # Newer snapshots only
//! Every write carries the instant its totals are for (`as_of`), and the script refuses one
//! older than what `<prefix>@as_of_ms` holds: two instances writing one prefix (redundant or
//! partitioned modes), or a flush that was retried past the next boundary, never let an
//! older snapshot overwrite a newer one. A refused write is counted in
//! `riverbed_redis_totals_stale_writes_total` and logged at debug level.
//!
//! # The totals own their keys
//! Each write replaces the whole result: the keys written last time are listed in the set
//! `riverbed:totals-keys:<prefix>`, and the same script reads that set, deletes those keys and
//! the new ones, and writes, so a group that left the query's result (its rows deleted, a
//! filter that now excludes it) and a total that became NULL disappear from Redis instead of
//! keeping stale values. Readers never see a half-replaced state, and two writers on one
//! prefix (redundant instances) cannot leave a stale key behind: the read is part of the
//! atomic write. Nothing else should write into these keys. (The keys of the last write are
//! not declared to the script: run the totals against a single primary, not a cluster.)
//!
//! A row whose group is NULL cannot be named in Redis: it is skipped, counted in
//! `riverbed_redis_totals_null_groups_total` and logged (use `coalesce(group, '...')` in the
//! query to keep it).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::Script;
use redis::aio::ConnectionManager;
use riverbed_core::{GroupTotals, TotalsSnapshot, TotalsSource};
use serde::Deserialize;

use crate::error::Result;

/// How totals are laid out in Redis. Either way `<prefix>@as_of_ms` holds the instant (epoch
/// milliseconds) the totals were taken for.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum TotalsLayout {
    /// One hash per group, `<prefix><group>`, with one field per total: `totals:acme` ->
    /// `{count: 12, sum: 1234.50}`.
    HashPerGroup {
        /// Key prefix.
        prefix: String,
    },
    /// One hash per total, `<prefix><total>`, with one field per group: `sum` -> `{acme:
    /// 1234.50, ...}` (the layout of a `hash_incr` counter keyed by group).
    HashPerTotal {
        /// Key prefix.
        prefix: String,
    },
}

impl Default for TotalsLayout {
    fn default() -> Self {
        TotalsLayout::HashPerGroup {
            prefix: "totals:".into(),
        }
    }
}

impl TotalsLayout {
    /// The prefix of every key the totals are written to.
    pub fn prefix(&self) -> &str {
        match self {
            TotalsLayout::HashPerGroup { prefix } | TotalsLayout::HashPerTotal { prefix } => prefix,
        }
    }

    /// The key holding the instant the totals were taken for.
    pub fn as_of_key(&self) -> String {
        format!("{}@as_of_ms", self.prefix())
    }

    /// The set listing the keys the last write created. It lies outside the prefix, so
    /// readers that scan `<prefix>*` find only the totals and `@as_of_ms`.
    pub fn index_key(&self) -> String {
        format!("riverbed:totals-keys:{}", self.prefix())
    }

    /// The hashes `totals` become: key -> (field, value) pairs.
    fn hashes(&self, totals: &[GroupTotals]) -> BTreeMap<String, Vec<(String, String)>> {
        let prefix = self.prefix();
        let mut out: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
        for g in totals {
            for (name, value) in &g.values {
                let (key, field) = match self {
                    TotalsLayout::HashPerGroup { .. } => (format!("{prefix}{}", g.group), name),
                    TotalsLayout::HashPerTotal { .. } => (format!("{prefix}{name}"), &g.group),
                };
                out.entry(key)
                    .or_default()
                    .push((field.clone(), value.clone()));
            }
        }
        out
    }
}

/// The write of a snapshot, atomic with the read of the keys the last write left: `KEYS[1]`
/// the key index, `KEYS[2]` the `@as_of_ms` key, `KEYS[3..]` the hashes; `ARGV[1]` the instant,
/// `ARGV[2]` the number of hashes, then per hash its number of fields and the field-value
/// pairs. Returns 0 without writing when Redis holds totals for a later instant, else 1. The keys of the last write are read inside the script (they are not declared), so
/// two writers on one prefix (redundant instances) never leave a stale group behind. Long
/// argument lists go in chunks (Lua's `unpack` is bounded).
const WRITE_SCRIPT: &str = r"
local held = redis.call('GET', KEYS[2])
if held and tonumber(held) and tonumber(held) > tonumber(ARGV[1]) then return 0 end
local nh = tonumber(ARGV[2])
local fresh = {}
for i = 1, nh do fresh[KEYS[2 + i]] = true end
for _, k in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if not fresh[k] then redis.call('DEL', k) end
end
redis.call('DEL', KEYS[1])
local function chunked(cmd, key, list, from, to)
  while from <= to do
    local last = math.min(from + 999, to)
    redis.call(cmd, key, unpack(list, from, last))
    from = last + 1
  end
end
local a = 3
for i = 1, nh do
  local n = tonumber(ARGV[a])
  redis.call('DEL', KEYS[2 + i])
  chunked('HSET', KEYS[2 + i], ARGV, a + 1, a + 2 * n)
  a = a + 2 * n + 1
end
chunked('SADD', KEYS[1], KEYS, 3, 2 + nh)
redis.call('SET', KEYS[2], ARGV[1])
return 1
";

/// Where totals come from and where they go.
#[derive(Clone)]
pub struct Totals {
    source: Arc<dyn TotalsSource>,
    conn: ConnectionManager,
    layout: TotalsLayout,
    script: Script,
}

impl Totals {
    /// Totals of `source` written to `conn` in `layout`.
    pub fn new(
        source: Arc<dyn TotalsSource>,
        conn: ConnectionManager,
        layout: TotalsLayout,
    ) -> Self {
        Totals {
            source,
            conn,
            layout,
            script: Script::new(WRITE_SCRIPT),
        }
    }

    /// The layout.
    pub fn layout(&self) -> &TotalsLayout {
        &self.layout
    }

    /// The source's current totals. Groups without a name (NULL) are counted and logged.
    pub async fn fetch(&self) -> Result<TotalsSnapshot> {
        let out = self.source.fetch().await?;
        if out.null_groups > 0 {
            metrics::counter!("riverbed_redis_totals_null_groups_total", "prefix" => self.layout.prefix().to_owned())
                .increment(out.null_groups as u64);
            tracing::warn!(prefix = %self.layout.prefix(), rows = out.null_groups, "Totals rows with a NULL group skipped");
        }
        Ok(out)
    }

    /// Writes `totals` taken for `as_of` in one script, replacing what the last write left
    /// (see the module docs). Returns false, writing nothing, when Redis already holds totals
    /// for a later instant.
    pub async fn write(&self, totals: &[GroupTotals], as_of: SystemTime) -> Result<bool> {
        let hashes = self.layout.hashes(totals);
        let mut inv = self.script.prepare_invoke();
        inv.key(self.layout.index_key())
            .key(self.layout.as_of_key());
        inv.arg(epoch_ms(as_of)).arg(hashes.len());
        for (key, fields) in &hashes {
            inv.key(key).arg(fields.len()).arg(fields);
        }
        let mut conn = self.conn.clone();
        let written = inv.invoke_async::<i64>(&mut conn).await? == 1;
        if !written {
            metrics::counter!("riverbed_redis_totals_stale_writes_total", "prefix" => self.layout.prefix().to_owned())
                .increment(1);
            tracing::debug!(prefix = %self.layout.prefix(), as_of_ms = epoch_ms(as_of), "Redis holds newer totals; this older snapshot is not written");
        }
        Ok(written)
    }

    /// Whether Redis still holds the last write's `as_of` marker (false after Redis lost its
    /// data).
    pub async fn present(&self) -> Result<bool> {
        let mut conn = self.conn.clone();
        let n: u64 = redis::cmd("EXISTS")
            .arg(self.layout.as_of_key())
            .query_async(&mut conn)
            .await?;
        Ok(n == 1)
    }

    /// Fetches and writes; returns how many groups were written (0 when Redis held newer
    /// totals).
    pub async fn sync(&self, as_of: SystemTime) -> Result<usize> {
        let snapshot = self.fetch().await?;
        let written = self.write(&snapshot.groups, as_of).await?;
        Ok(if written { snapshot.groups.len() } else { 0 })
    }
}

/// Startup reconciliation: writes the current totals of committed data to Redis before the
/// pipeline consumes anything. Returns how many groups were written.
pub async fn reconcile(totals: &Totals) -> Result<usize> {
    let started = std::time::Instant::now();
    let groups = totals.sync(SystemTime::now()).await?;
    let took_ms = started.elapsed().as_millis() as u64;
    tracing::info!(prefix = %totals.layout().prefix(), groups, took_ms, "Counters reconciled from committed data");
    Ok(groups)
}

/// Milliseconds since the Unix epoch.
pub fn epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_parse_and_refuse_unknown_fields() {
        #[derive(Deserialize)]
        struct W {
            layout: TotalsLayout,
        }
        let w: W =
            toml::from_str("layout = { type = \"hash_per_total\", prefix = \"agg:\" }").unwrap();
        assert_eq!(w.layout.as_of_key(), "agg:@as_of_ms");
        assert!(
            toml::from_str::<W>("layout = { type = \"hash_per_group\", prefx = \"x\" }").is_err()
        );
    }
}
