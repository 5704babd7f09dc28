//! The `recipes/sensors` recipe end to end, with the real `riverbed` binary and the recipe's
//! own file against RabbitMQ: the simulator publishes readings while the pipeline runs, and
//! something happens in the middle (a graceful stop and a new run); the last aggregate
//! published per sensor must equal the one computed offline from what the simulator
//! published, every period publishes only the sensors that changed, and the metrics add up.
//!
//! The scenario takes its middle action as a parameter ([`Middle`]), so that other actions
//! (a hot reconfiguration) run the same checks.

#[path = "recipe_sensors/check.rs"]
mod check;
#[path = "reconfig/control.rs"]
mod control;
#[path = "recipe_sensors/recipe.rs"]
mod recipe;
#[path = "recipe_orders/service.rs"]
mod service;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use recipe::{Recipe, Watched};
use riverbed_sensor_sim::SimConfig;
use serde_json::Value;
use service::Service;

const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const RECIPE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../recipes/sensors");
/// How long any one thing may take (a process exit, an aggregate arriving).
const LIMIT: Duration = Duration::from_secs(30);
/// Readings in all, and how fast: about ten seconds of traffic.
const READINGS: u64 = 2400;
const RATE: u32 = 240;
const SENSORS: u32 = 12;
/// The period of the recipe's batches and metrics.
const PERIOD: Duration = Duration::from_secs(1);

fn services() -> bool {
    riverbed_core::testing::require_service("RabbitMQ", "127.0.0.1:5672")
}

#[tokio::test]
async fn the_recipe_file_validates() {
    let path = Path::new(RECIPE).join("pipeline.toml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_riverbed"))
        .args(["validate", path.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains(": ok ("), "{text}");
    assert!(text.contains("2 partitions"), "{text}");
    let file = std::fs::read_to_string(&path).unwrap();
    for setting in [
        "coalesce = true",
        "max_wait = \"1s\"",
        "restore_from = \"state\"",
        "kind = \"pipeline_metrics\"",
    ] {
        assert!(file.contains(setting), "pipeline.toml: {setting}");
    }
}

#[tokio::test]
async fn the_simulator_refuses_to_publish_into_nothing() {
    if !services() {
        return;
    }
    let recipe = Recipe::new();
    let sim = SimConfig {
        amqp_url: AMQP.into(),
        exchange: recipe.name("readings"),
        sensors: 2,
        rate: 100,
        count: Some(5),
        seed: 1,
        first_seq: 1,
        out: None,
    };
    let e = riverbed_sensor_sim::run(&sim, std::future::pending())
        .await
        .expect_err("no queue is bound to the exchange");
    assert!(
        format!("{e:#}").contains("reading 1 was returned: no queue is bound"),
        "{e:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregates_stay_exact_across_a_graceful_restart() {
    if !services() {
        return;
    }
    let _broker = riverbed_core::testing::lock_service("rabbitmq", false).await;
    tokio::time::timeout(Duration::from_secs(90), scenario(Middle::Restart))
        .await
        .expect("the scenario finishes within 90 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregates_stay_exact_across_a_crash() {
    if !services() {
        return;
    }
    let _broker = riverbed_core::testing::lock_service("rabbitmq", false).await;
    tokio::time::timeout(Duration::from_secs(90), scenario(Middle::Crash))
        .await
        .expect("the scenario finishes within 90 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sensors_reconfig_from_the_control_queue_loses_and_repeats_nothing() {
    if !services() {
        return;
    }
    let _broker = riverbed_core::testing::lock_service("rabbitmq", false).await;
    tokio::time::timeout(Duration::from_secs(90), scenario(Middle::Reconfig))
        .await
        .expect("the scenario finishes within 90 s");
}

/// What happens while the readings keep coming.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Middle {
    /// A command on the control queue: the state sink's batches 10 -> 100, partitions
    /// (batchers) 2 -> 4; the same process drains and goes on with the new configuration.
    Reconfig,
    /// SIGTERM (the run drains and exits), then `riverbed run` again with the same file.
    Restart,
    /// SIGKILL (no drain: what was not acknowledged is redelivered), then `riverbed run` again.
    Crash,
}

impl Middle {
    /// Applies the action to the running pipeline; returns the pipeline that runs on and the
    /// summaries of the runs that ended.
    async fn apply(self, run: Service, s: &Scene) -> (Service, Vec<Value>) {
        match self {
            Middle::Reconfig => {
                let change = r#"{"sinks.state.batch.max_size": 100, "pipeline.partitions": 4}"#;
                let mut asker = control::Asker::open(&s.conn).await;
                let queue = s.recipe.name("control");
                let answer = asker.ask(&queue, change, "reconfig-1", LIMIT).await;
                assert_eq!(answer["status"], "applied", "{answer}");
                assert_eq!(answer["generation"], 2, "{answer}");
                assert_eq!(answer["drained"], true, "{answer}");
                (run, vec![])
            }
            Middle::Restart => {
                let summary = run.stop().await;
                (
                    Service::start(&s.recipe, "pipeline-2", &s.file),
                    vec![summary],
                )
            }
            Middle::Crash => {
                // The aggregates cannot be published for a while: the readings behind them
                // stay unacknowledged while their snapshots are committed to SQLite, so the
                // crash leaves readings that were counted and will come again.
                s.recipe.cut_aggregates(&s.conn).await;
                let before = s.watched.metrics.lock().unwrap().len();
                wait_until(&s.watched, "a period after the publishes failed", |w| {
                    let m = w.metrics.lock().unwrap();
                    let failing = m[before..]
                        .iter()
                        .position(|m| m.body["totals"]["unavailable_waits"].as_u64() > Some(0));
                    failing.is_some_and(|i| m.len() > before + i + 1)
                })
                .await;
                let metrics = s.watched.metrics.lock().unwrap().clone();
                let acked = metrics.last().unwrap().body["totals"]["acked"]
                    .as_u64()
                    .unwrap();
                run.crash();
                let stored = s.recipe.stored_count().await;
                assert!(
                    stored > acked,
                    "the crash left readings counted ({stored}) but not acknowledged ({acked})"
                );
                s.recipe.rebind_aggregates(&s.conn).await;
                (Service::start(&s.recipe, "pipeline-2", &s.file), vec![])
            }
        }
    }

    /// Whether every run drained: each reading was received and acknowledged once, every
    /// aggregate published is a change, and the metrics of the runs add up to the readings.
    /// After a crash, readings come again: those counted before it are recognised by their
    /// `seq` and not counted twice, but an aggregate may be published twice, and the killed
    /// run's last metrics are gone.
    fn drains(self) -> bool {
        match self {
            Middle::Restart | Middle::Reconfig => true,
            Middle::Crash => false,
        }
    }

    /// How many batches it flushes early (a drain writes what waits at once): gaps below the
    /// period that a sensor's aggregates may show.
    fn early_flushes(self) -> usize {
        match self {
            Middle::Restart | Middle::Reconfig => 1,
            Middle::Crash => 0,
        }
    }
}

/// The running scenario's recipe, file and watch queues, for the middle action.
struct Scene {
    recipe: Recipe,
    file: PathBuf,
    conn: lapin::Connection,
    watched: Watched,
}

async fn scenario(middle: Middle) {
    let recipe = Recipe::new();
    let file = recipe.pipeline();
    let (watched, conn) = recipe.watch().await;
    let started = Instant::now();
    let first = Service::start(&recipe, "pipeline-1", &file);
    recipe.wait_queue(&conn).await;

    let readings = recipe.dir().join("readings.jsonl");
    let sim = SimConfig {
        amqp_url: AMQP.into(),
        exchange: recipe.name("readings"),
        sensors: SENSORS,
        rate: RATE,
        count: Some(READINGS),
        seed: 13,
        first_seq: 1,
        out: Some(readings.clone()),
    };
    let simulator =
        tokio::spawn(async move { riverbed_sensor_sim::run(&sim, std::future::pending()).await });

    // A third of the readings counted, then the middle action, while the simulator goes on.
    wait_until(&watched, "a third of the readings aggregated", |w| {
        check::counted(w) >= READINGS / 3
    })
    .await;
    let scene = Scene {
        recipe,
        file,
        conn,
        watched,
    };
    let (last, mut summaries) = middle.apply(first, &scene).await;
    let Scene {
        recipe: _recipe,
        conn,
        watched,
        ..
    } = scene;

    let published = simulator.await.unwrap().expect("the simulator ran");
    assert_eq!(published.published, READINGS);
    let expected = check::expected(&readings);
    assert_eq!(expected.values().map(|e| e.count).sum::<u64>(), READINGS);
    wait_until(&watched, "the last aggregate of every sensor", |w| {
        let counted = check::counted(w);
        assert!(
            counted <= READINGS,
            "{counted} readings counted, of {READINGS}"
        );
        counted == READINGS
    })
    .await;
    summaries.push(last.stop().await);
    let elapsed = started.elapsed();
    let received: u64 = summaries
        .iter()
        .map(|s| s["received"].as_u64().unwrap())
        .sum();
    let acked: u64 = summaries.iter().map(|s| s["acked"].as_u64().unwrap()).sum();
    if middle.drains() {
        assert_eq!((received, acked), (READINGS, READINGS), "{summaries:?}");
    } else {
        assert_eq!(
            received, acked,
            "the last run acknowledged all it took: {summaries:?}"
        );
    }
    // Each run publishes its last metrics as it stops.
    wait_until(&watched, "the metrics of every reading", |w| {
        check::metrics_acked(w) >= acked
    })
    .await;
    check::final_aggregates(&watched, &expected);
    check::only_changes(&watched, PERIOD, middle, elapsed);
    let partitions = if middle == Middle::Reconfig { 4 } else { 2 };
    check::metrics(
        &watched,
        middle.drains().then_some(READINGS),
        elapsed,
        partitions,
    );
    let _ = conn.close(200, "OK".into()).await;
}

/// Polls `done` on what the watch queues received, until it holds or [`LIMIT`] is over.
async fn wait_until(watched: &Watched, what: &str, done: impl Fn(&Watched) -> bool) {
    let deadline = Instant::now() + LIMIT;
    while !done(watched) {
        assert!(
            Instant::now() < deadline,
            "{what}: not within {LIMIT:?} ({} readings counted)",
            check::counted(watched)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
