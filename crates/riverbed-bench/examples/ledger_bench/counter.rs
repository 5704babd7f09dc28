//! The `hash_incr` script on its own: the previous script (`EXISTS` + increment + `SET` per
//! message) against the current one (`SET NX` per message, one increment per group), on the
//! same messages: messages per second, Redis commands per batch, and memory per marker.

use std::time::Instant;

use redis::aio::MultiplexedConnection;
use riverbed_core::{BatchOutcome, Message, Sink};
use riverbed_redis::{Amount, DedupConfig, HashIncrConfig, HashIncrSink, RedisConfig};

use super::REDIS_URL;

/// The script before grouping, kept here for comparison.
const PREVIOUS: &str = r"
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

/// One measured run.
pub struct Run {
    /// Messages per second, end to end (the sink also decodes messages and renders keys).
    pub rate: f64,
    /// Microseconds Redis spends in the script per 500-message batch.
    pub script_usec_per_batch: f64,
    /// Redis commands per 500-message batch (script calls excluded).
    pub commands_per_batch: f64,
    /// Bytes of Redis memory per marker.
    pub bytes_per_marker: f64,
}

async fn info(c: &mut MultiplexedConnection, section: &str) -> String {
    redis::cmd("INFO")
        .arg(section)
        .query_async(c)
        .await
        .expect("info")
}

/// Commands run by Redis so far (scripts' inner calls included, `EVAL*` itself excluded), and
/// microseconds spent running scripts (`EVAL*` calls, their inner commands included).
async fn commands(c: &mut MultiplexedConnection) -> (u64, u64) {
    let stats = info(c, "commandstats").await;
    let field = |line: &str, name: &str| -> u64 {
        line.split(&format!("{name}="))
            .nth(1)
            .and_then(|v| v.split(',').next()?.parse().ok())
            .unwrap_or(0)
    };
    let mut inner = 0;
    let mut script_usec = 0;
    for line in stats.lines().filter(|l| l.starts_with("cmdstat_")) {
        if line.starts_with("cmdstat_eval") {
            script_usec += field(line, "usec");
        } else if !line.starts_with("cmdstat_info") {
            inner += field(line, "calls");
        }
    }
    (inner, script_usec)
}

async fn used_memory(c: &mut MultiplexedConnection) -> u64 {
    info(c, "memory")
        .await
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:")?.trim().parse().ok())
        .expect("used_memory")
}

fn batches(n: usize) -> Vec<Vec<Message>> {
    let messages: Vec<Message> = (0..n)
        .map(|i| {
            let mut m = Message::from_json(
                serde_json::json!({"provider": format!("p{}", i % 20), "cents": i % 997}),
            );
            m.meta.message_id = Some(format!("tx-{i:08}"));
            m
        })
        .collect();
    messages.chunks(500).map(<[Message]>::to_vec).collect()
}

async fn previous(batch: &[Message], script: &redis::Script, c: &mut MultiplexedConnection) {
    let mut inv = script.prepare_invoke();
    inv.arg(86_400_000u64).arg("int");
    for m in batch {
        let body = m.json().expect("json");
        inv.key("bench:counter:previous:sum")
            .key(format!(
                "bench:counter:previous:seen:{}",
                m.meta.message_id.as_deref().unwrap_or_default()
            ))
            .arg(body["provider"].as_str().unwrap_or_default())
            .arg(body["cents"].as_i64().unwrap_or_default());
    }
    let _: u64 = inv.invoke_async(c).await.expect("previous script");
}

/// Runs `n` messages through the previous script, then through the sink.
pub async fn compare(n: usize) -> (Run, Run) {
    let mut c = redis::Client::open(REDIS_URL)
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let batches = batches(n);
    let script = redis::Script::new(PREVIOUS);
    let before = start(&mut c, "previous").await;
    for b in &batches {
        previous(b, &script, &mut c).await;
    }
    let old = finish(&mut c, before, n).await;
    let sink = HashIncrSink::from_config(
        "bench",
        &HashIncrConfig {
            redis: RedisConfig::new(REDIS_URL),
            key: "bench:counter:current:sum".into(),
            field: "/provider".into(),
            amount: "/cents".into(),
            kind: Amount::Integer,
            dedup: DedupConfig {
                prefix: Some("bench:counter:current:seen:".into()),
                ..DedupConfig::default()
            },
        },
    )
    .await
    .expect("sink");
    let before = start(&mut c, "current").await;
    for b in &batches {
        assert!(sink.write(b).await == BatchOutcome::Committed);
    }
    let new = finish(&mut c, before, n).await;
    super::reset_redis("bench:counter:").await;
    (old, new)
}

async fn start(c: &mut MultiplexedConnection, name: &str) -> ((u64, u64), u64, Instant) {
    super::reset_redis(&format!("bench:counter:{name}")).await;
    (commands(c).await, used_memory(c).await, Instant::now())
}

async fn finish(
    c: &mut MultiplexedConnection,
    before: ((u64, u64), u64, Instant),
    n: usize,
) -> Run {
    let rate = n as f64 / before.2.elapsed().as_secs_f64();
    let (inner, usec) = commands(c).await;
    let memory = used_memory(c).await.saturating_sub(before.1);
    let batches = n.div_ceil(500) as f64;
    Run {
        rate,
        script_usec_per_batch: (usec - before.0.1) as f64 / batches,
        commands_per_batch: (inner - before.0.0) as f64 / batches,
        bytes_per_marker: memory as f64 / n as f64,
    }
}
