//! The sports-feed recipe end to end (`cargo test sports`): the feed simulator publishes odds
//! and alives to a topic exchange; `riverbed` instances consume it through exclusive,
//! server-named queues only, track the producers and recover what they missed through the
//! simulator's recovery endpoint.
//!
//! - singleton: two instances, the leader SIGKILLed mid-run; the standby takes over, recovers
//!   from the alive the leader stored, and in the end nothing is lost; the replays'
//!   duplicates are absorbed by the versioned upsert (counted in the arrival log).
//! - redundant: two instances, each on its own queue, Redis claims picking one writer per
//!   odds change; one SIGKILLed mid-run: nothing lost, nothing written twice, and the
//!   survivor's producers never went down.
//! - tracking: one instance; silenced alives and `subscribed = 0` mark a producer down (log,
//!   metric, state table) and a recovery brings it up.
//!
//! Each test prints published / lost / duplicated / takeover figures.

#[path = "recipe_transactions/daemon.rs"]
mod daemon;
#[path = "recipe_sports_feed/setup.rs"]
mod setup;

use std::time::{Duration, Instant};

use riverbed_core::testing::{lock_service, require_service};

use daemon::Daemon;
use setup::{World, producer, published, wait_nth};

const MINUTE: Duration = Duration::from_secs(60);

fn services() -> bool {
    require_service("RabbitMQ", "127.0.0.1:5672") && require_service("PostgreSQL", "127.0.0.1:5432")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sports_feed_singleton_standby_recovers_what_a_sigkilled_leader_missed() {
    if !services() {
        return;
    }
    let _locks = (
        lock_service("rabbitmq", false).await,
        lock_service("postgres", false).await,
    );
    let w = World::new("single").await;
    let sim = w.simulator(1500, 100, Duration::from_millis(500)).await;
    let config = w.config("singleton.toml", &sim, "");
    let leader = Daemon::spawn("leader", &config, "info");
    for p in ["1", "3"] {
        wait_nth(&leader, 1, "Producer up", MINUTE, producer(p)).await;
    }
    let standby = Daemon::spawn("standby", &config, "info");
    standby
        .wait_log(
            "Standing by: another instance holds the lease",
            MINUTE,
            |_| true,
        )
        .await;
    let total = 3000;
    let deadline = Instant::now() + MINUTE;
    // Mid-run, once the leader has stored a good alive to recover from.
    let stored = loop {
        let stored = w.stored_alive("1").await;
        if let Some(s) = stored
            && w.tally().await.distinct >= total / 3
        {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the leader wrote or stored too little"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut leader = leader;
    leader.kill();
    let killed = Instant::now();
    standby
        .wait_log("Leader: consuming", MINUTE, |_| true)
        .await;
    let takeover = killed.elapsed();
    let request = wait_nth(&standby, 1, "Recovery requested", MINUTE, producer("1")).await;
    let after = request["after"]
        .as_i64()
        .expect("recovering from the stored alive");
    assert!(
        after >= stored,
        "after {after} is the stored alive {stored} or a later one"
    );
    for p in ["1", "3"] {
        wait_nth(&standby, 1, "Producer up", MINUTE, producer(p)).await;
    }
    let recovered = killed.elapsed();
    w.wait_all_arrived(&sim, MINUTE).await;
    let t = w.tally().await;
    let published = published(&sim);
    let lost = published.iter().filter(|id| !t.ids.contains(*id)).count();
    eprintln!(
        "sports singleton: published {}, lost {lost}, duplicated {} (writes absorbed by the \
         versioned upsert), {} recovered only by replay, takeover {} ms, producers up again \
         after {} ms",
        published.len(),
        t.writes - t.distinct,
        t.replay_only,
        takeover.as_millis(),
        recovered.as_millis()
    );
    assert_eq!(published.len(), total);
    assert_eq!(lost, 0, "nothing lost once recovery completed");
    assert_eq!(
        t.distinct, total,
        "nothing but the published odds changes arrived"
    );
    w.assert_odds_current(&sim).await;
    standby.terminate();
    let mut standby = standby;
    let (status, summary) = standby.exit(MINUTE).await;
    assert!(status.success(), "{summary}");
    sim.stop().await.unwrap();
    w.clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sports_feed_redundant_instances_lose_and_duplicate_nothing_when_one_is_sigkilled() {
    if !(services() && require_service("Redis", "127.0.0.1:6379")) {
        return;
    }
    let _locks = (
        lock_service("rabbitmq", false).await,
        lock_service("postgres", false).await,
        lock_service("redis", false).await,
    );
    let w = World::new("redundant").await;
    let sim = w.simulator(1500, 100, Duration::from_millis(500)).await;
    let config = w.config("redundant.toml", &sim, "");
    let mut a = Daemon::spawn("a", &config, "info");
    wait_nth(&a, 1, "Producer up", MINUTE, producer("1")).await;
    let b = Daemon::spawn("b", &config, "info");
    for d in [&a, &b] {
        for p in ["1", "3"] {
            wait_nth(d, 1, "Producer up", MINUTE, producer(p)).await;
        }
    }
    let total = 3000;
    let deadline = Instant::now() + MINUTE;
    while w.tally().await.distinct < total / 3 {
        assert!(Instant::now() < deadline, "too little written");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let at_kill = w.tally().await.distinct;
    let kill_time = std::time::SystemTime::now();
    a.kill();
    let killed = Instant::now();
    while w.tally().await.distinct <= at_kill {
        assert!(killed.elapsed() < MINUTE, "nothing written after the kill");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let takeover = killed.elapsed();
    w.wait_all_arrived(&sim, MINUTE).await;
    let t = w.tally().await;
    let published = published(&sim);
    let lost = published.iter().filter(|id| !t.ids.contains(*id)).count();
    eprintln!(
        "sports redundant: published {}, lost {lost}, duplicated {}, takeover {} ms (until the \
         survivor wrote the next odds change)",
        published.len(),
        t.writes - t.distinct,
        takeover.as_millis()
    );
    assert_eq!(lost, 0, "nothing lost");
    assert_eq!(t.distinct, total);
    // The one write the claims can repeat: what the killed instance committed but had not yet
    // marked done is written again by the survivor once the claim expires. Every other copy
    // (the survivor's own, every replay) was skipped.
    let later: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM (SELECT id FROM {} GROUP BY id \
         HAVING count(*) > 1 AND min(received_at) > to_timestamp($1::float8 / 1000)) d",
        w.arrivals
    )))
    .bind(
        kill_time
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as f64,
    )
    .fetch_one(&w.pg)
    .await
    .unwrap();
    assert_eq!(
        later, 0,
        "no odds change first received after the kill was written twice"
    );
    assert!(
        t.writes - t.distinct <= 1024,
        "at most the killed instance's window again"
    );
    assert!(
        b.find("Producer down", |_| true).is_none(),
        "the survivor's producers stayed up"
    );
    w.assert_odds_current(&sim).await;
    b.terminate();
    let mut b = b;
    let (status, summary) = b.exit(MINUTE).await;
    assert!(status.success(), "{summary}");
    sim.stop().await.unwrap();
    w.clean().await;
}

fn scrape(port: u16, line_start: &str) -> Option<f64> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    body.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

async fn control(sim: &riverbed_feed_sim::Simulator, producer: u32, query: &str) {
    let url = format!("http://{}/control/{producer}/alives?{query}", sim.addr());
    let r = reqwest::Client::new().post(url).send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.status());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sports_feed_tracking_marks_silent_and_unsubscribed_producers_down_until_recovered() {
    if !services() {
        return;
    }
    let _locks = (
        lock_service("rabbitmq", false).await,
        lock_service("postgres", false).await,
    );
    let w = World::new("track").await;
    let sim = w.simulator(1500, 50, Duration::from_millis(500)).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let metrics = format!("[admin]\nlisten = \"127.0.0.1:{port}\"\n");
    let config = w.config("singleton.toml", &sim, &metrics);
    let mut d = Daemon::spawn("tracker", &config, "info");
    wait_nth(&d, 1, "Producer up", MINUTE, producer("1")).await;
    let gauge = "riverbed_feed_producer_up{producer=\"1\"}";
    assert_eq!(scrape(port, gauge), Some(1.0));

    // Once a good alive is stored, the next recoveries start from it.
    let deadline = Instant::now() + MINUTE;
    while w.stored_alive("1").await.is_none() {
        assert!(Instant::now() < deadline, "no good alive stored");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    control(&sim, 1, "mode=silent&duration=4s").await;
    let down = wait_nth(&d, 1, "Producer down", MINUTE, producer("1")).await;
    assert_eq!(down["reason"], "alive_timeout");
    assert_eq!(scrape(port, gauge), Some(0.0), "down while silent");
    // The row is written right after the log line: wait for it (the producer stays down
    // until its alives come back).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let state: (bool, String) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT up, reason FROM {} WHERE producer = '1'",
            w.state
        )))
        .fetch_one(&w.pg)
        .await
        .unwrap();
        if state == (false, "alive_timeout".to_owned()) {
            break;
        }
        assert!(Instant::now() < deadline, "the state table says {state:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_nth(&d, 2, "Producer up", MINUTE, producer("1")).await;

    control(&sim, 1, "mode=unsubscribed&duration=1s").await;
    let down = wait_nth(&d, 2, "Producer down", MINUTE, producer("1")).await;
    assert_eq!(down["reason"], "unsubscribed");
    wait_nth(&d, 3, "Producer up", MINUTE, producer("1")).await;
    assert_eq!(scrape(port, gauge), Some(1.0));
    let requests = sim.feed().recoveries();
    let ones: Vec<_> = requests.iter().filter(|r| r.producer == 1).collect();
    assert_eq!(ones.len(), 3, "{ones:?}");
    assert!(
        ones[0].after.is_none(),
        "nothing stored at the first start: everything"
    );
    assert!(
        ones[1].after.is_some() && ones[2].after >= ones[1].after,
        "{ones:?}"
    );
    assert!(
        d.find("Producer down", producer("3")).is_none(),
        "producer 3 stayed up"
    );
    w.wait_all_arrived(&sim, MINUTE).await;
    let t = w.tally().await;
    let lost = published(&sim)
        .iter()
        .filter(|id| !t.ids.contains(*id))
        .count();
    eprintln!(
        "sports tracking: published {}, lost {lost}, duplicated {}, recoveries {}",
        t.distinct,
        t.writes - t.distinct,
        requests.len()
    );
    assert_eq!(lost, 0);
    w.assert_odds_current(&sim).await;
    d.terminate();
    let (status, summary) = d.exit(MINUTE).await;
    assert!(status.success(), "{summary}");
    sim.stop().await.unwrap();
    w.clean().await;
}
