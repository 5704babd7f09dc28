//! The `hash_incr` sink's script against the real Redis: counters over the same messages keep
//! separate markers by default, a refused increment never double counts the rest (with or
//! without dedup) and leaves no marker behind, grouped integer sums stay exact.

mod support;

use std::collections::HashMap;

use riverbed_core::{BatchOutcome, Message, Outcome, Sink};
use riverbed_redis::{Amount, DedupConfig, HashIncrConfig, HashIncrSink, default_marker_prefix};
use support::*;

fn config(key: String, amount: &str, dedup: bool) -> HashIncrConfig {
    HashIncrConfig {
        redis: redis_config(),
        key,
        field: "/provider".into(),
        amount: amount.into(),
        kind: Amount::Integer,
        dedup: DedupConfig {
            enabled: dedup,
            ..DedupConfig::default()
        },
    }
}

fn payment(i: u64, provider: &str) -> Message {
    let mut m =
        Message::from_json(serde_json::json!({"provider": provider, "cents": i * 3 + 1, "one": 1}));
    m.meta.message_id = Some(format!("tx-{i}"));
    m
}

async fn hash(key: &str) -> HashMap<String, i64> {
    redis::cmd("HGETALL")
        .arg(key)
        .query_async(&mut redis().await)
        .await
        .unwrap()
}

async fn set_string(key: &str) {
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg("a string")
        .query_async(&mut redis().await)
        .await
        .unwrap();
}

#[tokio::test]
async fn two_counters_over_the_same_messages_keep_separate_markers_by_default() {
    if !services_available() {
        return;
    }
    let _shared = redis_lock(false).await;
    let prefix = unique("pair");
    let count = config(format!("{prefix}:count"), "/one", true);
    let sum = config(format!("{prefix}:sum"), "/cents", true);
    assert_ne!(default_marker_prefix(&count), default_marker_prefix(&sum));
    let sinks = [
        HashIncrSink::from_config("count", &count).await.unwrap(),
        HashIncrSink::from_config("sum", &sum).await.unwrap(),
    ];
    let batch: Vec<Message> = (0..30).map(|i| payment(i, "acme")).collect();
    for sink in &sinks {
        assert_eq!(sink.write(&batch).await, BatchOutcome::Committed);
        // Redelivered: skipped by each counter's own markers.
        assert_eq!(sink.write(&batch[..10]).await, BatchOutcome::Committed);
    }
    assert_eq!(hash(&format!("{prefix}:count")).await["acme"], 30);
    let cents: i64 = (0..30).map(|i| i * 3 + 1).sum();
    assert_eq!(hash(&format!("{prefix}:sum")).await["acme"], cents);
    delete_prefix(&prefix).await;
    delete_prefix(&default_marker_prefix(&count)).await;
    delete_prefix(&default_marker_prefix(&sum)).await;
}

/// Message 17 of 40 targets a key holding a string: WRONGTYPE, for it alone.
async fn refused_in_the_middle(dedup: bool) {
    let prefix = unique(if dedup { "refused" } else { "plain" });
    set_string(&format!("{prefix}:bad")).await;
    let mut c = config(format!("{prefix}:{{/provider}}"), "/cents", dedup);
    c.dedup.prefix = Some(format!("{prefix}:seen:"));
    let sink = HashIncrSink::from_config("counters", &c).await.unwrap();
    let mut batch: Vec<Message> = (0..40)
        .map(|i| payment(i, &format!("p{}", i % 3)))
        .collect();
    batch[17] = payment(17, "bad");
    let outcome = sink.write(&batch).await;
    let refused: Vec<usize> = (0..40).filter(|i| !outcome.get(*i).is_ok()).collect();
    assert_eq!(refused, [17]);
    let Outcome::Permanent(f) = outcome.get(17) else {
        panic!("{outcome:?}")
    };
    assert!(f.error.contains("WRONGTYPE"), "{}", f.error);
    let mut total = 0;
    for p in 0..3 {
        total += hash(&format!("{prefix}:p{p}")).await.values().sum::<i64>();
    }
    let want: i64 = (0..40).filter(|i| *i != 17).map(|i| i * 3 + 1).sum();
    assert_eq!(total, want, "every other increment counted exactly once");
    if dedup {
        // The refused message left no marker: once the key is fixed, a redrive counts it.
        let _: () = redis::cmd("DEL")
            .arg(format!("{prefix}:bad"))
            .query_async(&mut redis().await)
            .await
            .unwrap();
        assert_eq!(sink.write(&batch[17..18]).await, BatchOutcome::Committed);
        assert_eq!(hash(&format!("{prefix}:bad")).await["bad"], 17 * 3 + 1);
    }
    delete_prefix(&prefix).await;
}

#[tokio::test]
async fn a_refused_increment_with_dedup_never_double_counts_and_leaves_no_marker() {
    if !services_available() {
        return;
    }
    let _shared = redis_lock(false).await;
    refused_in_the_middle(true).await;
}

#[tokio::test]
async fn a_refused_increment_without_dedup_never_double_counts_the_rest() {
    if !services_available() {
        return;
    }
    let _shared = redis_lock(false).await;
    refused_in_the_middle(false).await;
}

#[tokio::test]
async fn grouped_integer_sums_stay_exact_past_two_to_the_53() {
    if !services_available() {
        return;
    }
    let _shared = redis_lock(false).await;
    let prefix = unique("exact");
    let mut c = config(format!("{prefix}:sum"), "/cents", true);
    c.dedup.prefix = Some(format!("{prefix}:seen:"));
    let sink = HashIncrSink::from_config("exact", &c).await.unwrap();
    let big = (1i64 << 52) + 1;
    let batch: Vec<Message> = (0..3)
        .map(|i| {
            let mut m = Message::from_json(serde_json::json!({"provider": "acme", "cents": big}));
            m.meta.message_id = Some(format!("big-{i}"));
            m
        })
        .collect();
    // The same message twice in its batch counts once.
    let mut twice = batch.clone();
    twice.push(batch[0].clone());
    assert_eq!(sink.write(&twice).await, BatchOutcome::Committed);
    assert_eq!(hash(&format!("{prefix}:sum")).await["acme"], 3 * big);
    delete_prefix(&prefix).await;
}

/// A private Redis, a replica of a primary that does not exist: it refuses writes with
/// `READONLY`, as a primary demoted by a failover does. Killed when dropped.
struct Replica {
    child: std::process::Child,
    url: String,
}

impl Replica {
    async fn start() -> Replica {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--replicaof",
                "127.0.0.1",
                "1",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server runs");
        let replica = Replica {
            child,
            url: format!("redis://127.0.0.1:{port}"),
        };
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while replica.conn().await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the replica never answered"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        replica
    }

    async fn conn(&self) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        let mut c = redis::Client::open(self.url.as_str())?
            .get_multiplexed_async_connection()
            .await?;
        let _: String = redis::cmd("PING").query_async(&mut c).await?;
        Ok(c)
    }

    async fn promote(&self) {
        let _: () = redis::cmd("REPLICAOF")
            .arg("NO")
            .arg("ONE")
            .query_async(&mut self.conn().await.unwrap())
            .await
            .unwrap();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Redis refuses the increments with `READONLY` (a failover in progress): an error that is not
/// the group's, as `OOM`, `MISCONF` or `NOREPLICAS` would be. The batch is retried, not
/// dead-lettered, leaves no marker, and counts once when Redis accepts writes again.
async fn refused_by_a_replica(dedup: bool) {
    let replica = Replica::start().await;
    let mut c = config("sum:{/provider}".into(), "/cents", dedup);
    c.redis = riverbed_redis::RedisConfig::new(&replica.url);
    c.dedup.prefix = Some("seen:".into());
    let sink = HashIncrSink::from_config("counters", &c).await.unwrap();
    let batch: Vec<Message> = (0..10)
        .map(|i| payment(i, &format!("p{}", i % 2)))
        .collect();
    let outcome = sink.write(&batch).await;
    for i in 0..batch.len() {
        let Outcome::Unavailable(f) = outcome.get(i) else {
            panic!("message {i} must be waited out: {outcome:?}")
        };
        assert!(f.error.contains("read only replica"), "{}", f.error);
    }
    replica.promote().await;
    let mut conn = replica.conn().await.unwrap();
    let markers: Vec<String> = redis::cmd("KEYS")
        .arg("seen:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(markers, Vec::<String>::new(), "no marker left behind");
    assert_eq!(sink.write(&batch).await, BatchOutcome::Committed);
    let mut total = 0;
    for p in 0..2 {
        let h: HashMap<String, i64> = redis::cmd("HGETALL")
            .arg(format!("sum:p{p}"))
            .query_async(&mut conn)
            .await
            .unwrap();
        total += h.values().sum::<i64>();
    }
    assert_eq!(total, (0..10).map(|i| i * 3 + 1).sum::<i64>());
}

#[tokio::test]
async fn increments_a_replica_refuses_with_dedup_are_retried_and_leave_no_marker() {
    if !services_available() {
        return;
    }
    refused_by_a_replica(true).await;
}

#[tokio::test]
async fn increments_a_replica_refuses_without_dedup_are_retried() {
    if !services_available() {
        return;
    }
    refused_by_a_replica(false).await;
}
