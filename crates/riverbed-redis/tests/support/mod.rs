//! Shared helpers of the Redis tests: services, unique names, the service lock, restarts.

#![allow(dead_code)]

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use riverbed_redis::RedisConfig;

/// The test Redis.
pub const REDIS_URL: &str = "redis://127.0.0.1:6379";

/// Takes the Redis lock (a file lock, so across test binaries too): tests that restart Redis
/// take it exclusively, the others share it.
pub async fn redis_lock(exclusive: bool) -> riverbed_core::testing::ServiceLock {
    riverbed_core::testing::lock_service("redis", exclusive).await
}

/// Whether Redis is there (or fails under `RIVERBED_REQUIRE_SERVICES=1`).
pub fn services_available() -> bool {
    riverbed_core::testing::require_service("Redis", "127.0.0.1:6379")
}

/// A name unique to this process and call: `prefix_<pid>_<n>`.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The Redis config of the tests.
pub fn redis_config() -> RedisConfig {
    RedisConfig::new(REDIS_URL)
}

/// A plain Redis connection for checks.
pub async fn redis() -> redis::aio::MultiplexedConnection {
    redis::Client::open(REDIS_URL)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Deletes every key starting with `prefix`, and the totals' key index of such prefixes.
pub async fn delete_prefix(prefix: &str) {
    let mut c = redis().await;
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut c)
        .await
        .unwrap();
    let indexes: Vec<String> = redis::cmd("KEYS")
        .arg(format!("riverbed:totals-keys:{prefix}*"))
        .query_async(&mut c)
        .await
        .unwrap();
    keys.extend(indexes);
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL")
            .arg(keys)
            .query_async(&mut c)
            .await
            .unwrap();
    }
}

/// Totals held in memory, standing in for a database: what `set` stores, `fetch` returns.
#[derive(Default)]
pub struct MemoryTotals(std::sync::Mutex<riverbed_core::TotalsSnapshot>);

impl MemoryTotals {
    /// Replaces the totals: `(group, [(name, value)])`.
    pub fn set(&self, groups: &[(&str, &[(&str, &str)])], null_groups: usize) {
        let groups = groups
            .iter()
            .map(|(g, values)| riverbed_core::GroupTotals {
                group: (*g).to_owned(),
                values: values
                    .iter()
                    .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                    .collect(),
            })
            .collect();
        *self.0.lock().unwrap() = riverbed_core::TotalsSnapshot {
            groups,
            null_groups,
        };
    }
}

#[async_trait::async_trait]
impl riverbed_core::TotalsSource for MemoryTotals {
    async fn fetch(&self) -> Result<riverbed_core::TotalsSnapshot, riverbed_core::TotalsError> {
        Ok(self.0.lock().unwrap().clone())
    }
}

/// A [`riverbed_redis::Totals`] of `source` on the test Redis.
pub async fn memory_totals(
    source: std::sync::Arc<MemoryTotals>,
    layout: riverbed_redis::TotalsLayout,
) -> riverbed_redis::Totals {
    riverbed_redis::Totals::new(source, redis_config().connect().await.unwrap(), layout)
}

fn ping() -> bool {
    Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", "6379", "ping"])
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "PONG")
}

/// Redis is down until this is dropped (or [`RedisDown::start`] is called): a test that fails
/// while Redis is stopped still leaves it running for the next one.
#[must_use = "Redis starts again when this is dropped"]
pub struct RedisDown(());

impl RedisDown {
    /// Starts Redis again now.
    pub fn start(self) {}
}

impl Drop for RedisDown {
    fn drop(&mut self) {
        start_redis();
    }
}

/// Stops Redis without saving (every key is lost, as in production without persistence).
pub fn stop_redis() -> RedisDown {
    let down = RedisDown(());
    let _ = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", "6379", "shutdown", "nosave"])
        .stderr(Stdio::null())
        .stdout(Stdio::null())
        .status();
    wait_for("Redis to stop", || !ping());
    down
}

/// Starts Redis as the CI does and waits until it answers PING.
pub fn start_redis() {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !ping() {
        assert!(std::time::Instant::now() < deadline, "Redis did not start");
        let _ = Command::new("redis-server")
            .args([
                "--daemonize",
                "yes",
                "--bind",
                "127.0.0.1",
                "-::1",
                "--port",
                "6379",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                "/var/lib/redis",
                "--logfile",
                "/var/log/redis/ci.log",
            ])
            .stdout(Stdio::null())
            .status();
        wait_until(Duration::from_secs(2), ping);
    }
}

/// Polls `cond` until it holds, for at most `limit`; returns whether it held.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_for(what: &str, cond: impl FnMut() -> bool) {
    assert!(
        wait_until(Duration::from_secs(20), cond),
        "waited 20s for {what}"
    );
}

/// Restarts Redis with every key lost.
pub fn restart_redis() {
    stop_redis().start();
}

/// A deterministic shuffle.
pub fn shuffle<T>(items: &mut [T], seed: u64) {
    let mut state = seed;
    for i in (1..items.len()).rev() {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        items.swap(i, (state >> 33) as usize % (i + 1));
    }
}
