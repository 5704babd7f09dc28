//! The sports-feed tests' world: a feed simulator in the test process, the recipe's file with
//! this run's names and short timings, and the checks made on the tables it fills.

// Shared by several tests; each uses a part of it.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use riverbed_feed_sim::{SimConfig, Simulator};
use sqlx::{PgPool, Row};

use crate::daemon::Daemon;

/// The shared database.
pub const PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
/// The shared broker.
pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// One run's names: exchange, tables, lease.
pub struct World {
    pub run: String,
    pub exchange: String,
    pub odds: String,
    pub arrivals: String,
    pub state: String,
    pub dir: tempfile::TempDir,
    pub pg: PgPool,
}

impl World {
    /// Unique names for this run.
    pub async fn new(label: &str) -> World {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let run = format!("{label}_{}_{nanos}", std::process::id());
        World {
            exchange: format!("sports_x_{run}"),
            odds: format!("sports_odds_{run}"),
            arrivals: format!("sports_arrivals_{run}"),
            state: format!("sports_state_{run}"),
            dir: tempfile::tempdir().unwrap(),
            pg: PgPool::connect(PG_URL).await.unwrap(),
            run,
        }
    }

    /// Starts the simulator: producers 1 and 3, an alive every 200 ms... `alive_every`.
    pub async fn simulator(&self, count: u64, rate: u32, alive_every: Duration) -> Simulator {
        Simulator::start(SimConfig {
            amqp_url: AMQP_URL.into(),
            exchange: self.exchange.clone(),
            producers: vec![1, 3],
            events: 12,
            markets: 4,
            rate,
            count: Some(count),
            alive_every,
            listen: "127.0.0.1:0".parse().unwrap(),
            seed: 7,
        })
        .await
        .expect("starting the feed simulator")
    }

    /// The recipe's `file` with this run's names, the simulator's address, timings short
    /// enough for a test, `extra` appended (cluster section, metrics) and the arrival log
    /// sink (every delivery written, by message id and time received: duplicates show).
    pub fn config(&self, file: &str, sim: &Simulator, extra: &str) -> PathBuf {
        let recipe = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../recipes/sports-feed");
        let text = std::fs::read_to_string(recipe.join(file)).unwrap();
        let dead = self.dir.path().join("dead.jsonl");
        let text = text
            .replace(
                "name = \"sports-feed\"",
                &format!("name = \"sports_lease_{}\"", self.run),
            )
            .replace(
                "exchange = \"sports-feed\"",
                &format!("exchange = \"{}\"", self.exchange),
            )
            .replace("table = \"odds\"", &format!("table = \"{}\"", self.odds))
            .replace(
                "\"riverbed_feed_producers\"",
                &format!("\"{}\"", self.state),
            )
            .replace("sports-feed-dead-letters.jsonl", dead.to_str().unwrap())
            .replace("http://127.0.0.1:8088", &format!("http://{}", sim.addr()))
            .replace("alive_timeout = \"20s\"", "alive_timeout = \"3s\"")
            .replace("min_interval = \"30s\"", "min_interval = \"2s\"")
            .replace("timeout = \"5m\"", "timeout = \"20s\"")
            .replace("claim_ttl = \"10s\"", "claim_ttl = \"1s\"");
        let arrivals = format!(
            r#"
[[sinks]]
name = "arrivals"
kind = "postgres"
mode = "append"
table = "{}"
key = ["id", "received_at"]
create_table = true
connection = {{ url = "{PG_URL}" }}
columns = [
  {{ name = "id", type = "text", from = "$message_id", required = true }},
  {{ name = "received_at", type = "timestamp", from = "$received_at", required = true }},
  {{ name = "replay", type = "boolean", from = "/replay" }},
]
"#,
            self.arrivals
        );
        let path = self.dir.path().join(file);
        std::fs::write(&path, format!("{extra}\n{text}{arrivals}")).unwrap();
        path
    }

    /// Waits until every odds change the simulator published has arrived (or `limit`).
    pub async fn wait_all_arrived(&self, sim: &Simulator, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !sim.feed().all_finished() {
            assert!(Instant::now() < deadline, "the simulator did not finish");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let published = published(sim).len();
        loop {
            let arrived = self.tally().await.distinct;
            if arrived >= published {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{arrived} of {published} odds changes arrived"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// What the arrival log holds.
    pub async fn tally(&self) -> Tally {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT id, count(*), bool_and(coalesce(replay, false)) FROM {} GROUP BY id",
            self.arrivals
        )))
        .fetch_all(&self.pg)
        .await
        .unwrap_or_default();
        let mut t = Tally::default();
        for r in rows {
            let (id, n, replay_only): (String, i64, bool) = (r.get(0), r.get(1), r.get(2));
            t.ids.insert(id);
            t.distinct += 1;
            t.writes += n as usize;
            t.replay_only += usize::from(replay_only);
        }
        t
    }

    /// Fails unless the odds table holds every market's last change, and nothing else.
    pub async fn assert_odds_current(&self, sim: &Simulator) {
        let mut want = BTreeMap::new();
        for p in [1, 3] {
            for c in sim.feed().history(p) {
                let key = (p as i64, format!("sr:match:{}", c.event), c.market as i64);
                want.insert(key, c.seq as i64);
            }
        }
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT event, market, seq, producer FROM {}",
            self.odds
        )))
        .fetch_all(&self.pg)
        .await
        .unwrap();
        let got: BTreeMap<_, _> = rows
            .iter()
            .map(|r| {
                (
                    (
                        r.get::<i64, _>(3),
                        r.get::<String, _>(0),
                        r.get::<i64, _>(1),
                    ),
                    r.get::<i64, _>(2),
                )
            })
            .collect();
        assert_eq!(got, want, "the odds table holds each market's last change");
    }

    /// The stored last good alive of `producer`.
    pub async fn stored_alive(&self, producer: &str) -> Option<i64> {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT last_alive FROM {} WHERE producer = $1",
            self.state
        )))
        .bind(producer)
        .fetch_optional(&self.pg)
        .await
        .ok()
        .flatten()
        .flatten()
    }

    /// Drops the tables and the exchange.
    pub async fn clean(self) {
        for t in [&self.odds, &self.arrivals, &self.state] {
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP TABLE IF EXISTS {t}")))
                .execute(&self.pg)
                .await;
        }
        if let Ok(c) = lapin::Connection::connect(AMQP_URL, Default::default()).await
            && let Ok(ch) = c.create_channel().await
        {
            let _ = ch
                .exchange_delete(self.exchange.as_str().into(), Default::default())
                .await;
        }
    }
}

/// The arrival log, summed up.
#[derive(Debug, Default)]
pub struct Tally {
    pub ids: HashSet<String>,
    pub distinct: usize,
    pub writes: usize,
    /// Odds changes that only came by replay (the live message never reached a queue).
    pub replay_only: usize,
}

/// The message id of every odds change the simulator published.
pub fn published(sim: &Simulator) -> Vec<String> {
    [1, 3]
        .iter()
        .flat_map(|&p| sim.feed().history(p))
        .map(|c| c.message_id())
        .collect()
}

/// The `n`-th (from 1) log line of `daemon` with this message and fields, waiting up to
/// `limit`.
pub async fn wait_nth(
    daemon: &Daemon,
    n: usize,
    message: &str,
    limit: Duration,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + limit;
    loop {
        let found: Vec<serde_json::Value> = daemon
            .lines()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v.get("fields").cloned())
            .filter(|f| f["message"] == message && pred(f))
            .collect();
        if let Some(f) = found.get(n - 1) {
            return f.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no {n}th log `{message}` within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A predicate on the log field `producer`.
pub fn producer(p: &'static str) -> impl Fn(&serde_json::Value) -> bool {
    move |f| f["producer"] == p
}
