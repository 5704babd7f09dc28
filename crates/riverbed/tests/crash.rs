//! The daemon under process death: SIGKILL mid-run loses nothing and the restart resumes at the
//! committed position; SIGTERM drains, settles everything and exits 0.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use riverbed_embedded::{Durability, EmbeddedLog, Record};
use sqlx::Row;

const N: u64 = 150_000;

fn config(dir: &Path, follow: bool) -> std::path::PathBuf {
    let text = format!(
        r#"
[pipeline]
partitions = 4
max_in_flight = 2048
key = "/k"
shutdown_grace = "20s"

[source]
kind = "embedded"
path = "{dir}/log.db"
topic = "t"
consumer = "crash-test"
follow = {follow}

[[sinks]]
name = "items"
kind = "sqlite"
path = "{dir}/out.db"
table = "items"
mode = "upsert"
key = ["id"]
columns = [
  {{ name = "id", type = "text", from = "/id" }},
  {{ name = "v", type = "integer", from = "/v" }},
  {{ name = "log_offset", type = "integer", from = "$position" }},
]
"#,
        dir = dir.display()
    );
    let path = dir.join(if follow { "follow.toml" } else { "once.toml" });
    std::fs::write(&path, text).unwrap();
    path
}

async fn fill(dir: &Path) -> EmbeddedLog {
    let log = EmbeddedLog::open(dir.join("log.db"), Durability::Full)
        .await
        .unwrap();
    for chunk in 0..(N / 5000) {
        let records = (chunk * 5000..(chunk + 1) * 5000)
            .map(|i| {
                Record::new(
                    None,
                    format!(r#"{{"id":"m{i}","k":"k{}","v":{i}}}"#, i % 97),
                )
            })
            .collect();
        log.append("t", records).await.unwrap();
    }
    log
}

fn spawn(config: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_riverbed"))
        .args(["run", "--quiet"])
        .arg(config)
        .env("RIVERBED_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

async fn rows(dir: &Path) -> i64 {
    let Ok(pool) = riverbed_sql::sqlite_pool(&dir.join("out.db")).await else {
        return 0;
    };
    let n = sqlx::query("SELECT count(*) FROM items")
        .fetch_one(&pool)
        .await
        .map(|r| r.get(0))
        .unwrap_or(0);
    pool.close().await;
    n
}

async fn wait_rows(dir: &Path, at_least: i64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while rows(dir).await < at_least {
        assert!(
            Instant::now() < deadline,
            "the sink never reached {at_least} rows"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn wait_exit(mut child: Child, limit: Duration) -> (std::process::ExitStatus, serde_json::Value) {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = std::io::read_to_string(child.stdout.take().unwrap()).unwrap();
            let report = out
                .lines()
                .last()
                .map(|l| serde_json::from_str(l).unwrap())
                .unwrap_or_default();
            return (status, report);
        }
        assert!(
            Instant::now() < deadline,
            "riverbed did not exit within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_run_loses_nothing_and_resumes_at_the_committed_position() {
    let dir = tempfile::tempdir().unwrap();
    let log = fill(dir.path()).await;
    let once = config(dir.path(), false);

    let mut child = spawn(&once);
    wait_rows(dir.path(), 20_000).await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let committed = log.position("crash-test", "t").await.unwrap().committed;
    let rows_at_kill = rows(dir.path()).await;
    assert!(
        committed > 0 && committed < N,
        "killed mid-run: committed {committed} of {N}"
    );
    assert!(
        rows_at_kill as u64 >= committed,
        "every committed position is in the sink"
    );

    let (status, report) = wait_exit(spawn(&once), Duration::from_secs(120));
    assert!(status.success(), "restart exited with {status}");
    assert_eq!(
        report["received"],
        N - committed,
        "the restart resumed exactly after the committed position"
    );
    assert_eq!(report["acked"], N - committed);
    assert_eq!(report["drained"], true);

    let pool = riverbed_sql::sqlite_pool(&dir.path().join("out.db"))
        .await
        .unwrap();
    let r = sqlx::query(
        "SELECT count(*), count(DISTINCT id), sum(v), min(log_offset), max(log_offset) FROM items",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(r.get::<i64, _>(0) as u64, N, "every message exactly once");
    assert_eq!(r.get::<i64, _>(1) as u64, N);
    assert_eq!(
        r.get::<i64, _>(2) as u64,
        N * (N - 1) / 2,
        "the values of all of them"
    );
    assert_eq!((r.get::<i64, _>(3), r.get::<i64, _>(4) as u64), (1, N));
    assert_eq!(log.position("crash-test", "t").await.unwrap().committed, N);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_settles_everything_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let log = fill(dir.path()).await;
    let child = spawn(&config(dir.path(), true));
    wait_rows(dir.path(), 10_000).await;
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let asked = Instant::now();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let (status, report) = wait_exit(child, Duration::from_secs(30));
    assert!(status.success(), "exited with {status}");
    assert!(
        asked.elapsed() < Duration::from_secs(20),
        "stopped within the grace period"
    );
    assert_eq!(report["drained"], true);
    let received = report["received"].as_u64().unwrap();
    assert_eq!(
        report["acked"].as_u64().unwrap(),
        received,
        "everything taken was settled"
    );
    assert_eq!(
        log.position("crash-test", "t").await.unwrap().committed,
        received,
        "the position covers exactly what was taken"
    );
    assert_eq!(rows(dir.path()).await as u64, received);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_aggregates_survive_sigkill_without_double_counting() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let log = EmbeddedLog::open(dir.path().join("log.db"), Durability::Full)
        .await
        .unwrap();
    let mut generator =
        riverbed_embedded::Generator::new(riverbed_embedded::DataKind::Sensors, 3, 16, Some(997));
    for _ in 0..40 {
        let records = (0..2500).map(|_| generator.next_record()).collect();
        log.append("readings", records).await.unwrap();
    }
    // The demo's own pipeline file, pointed at this directory and ending at the end of the log.
    let text = include_str!("../src/demo.toml")
        .replace("{dir}", &d)
        .replace("consumer = \"demo\"", "consumer = \"demo\"\nfollow = false");
    let cfg = dir.path().join("demo.toml");
    std::fs::write(&cfg, text).unwrap();
    let count_readings = async || -> i64 {
        let Ok(pool) = riverbed_sql::sqlite_pool(&dir.path().join("out.db")).await else {
            return 0;
        };
        sqlx::query("SELECT count(*) FROM readings")
            .fetch_one(&pool)
            .await
            .map(|r| r.get(0))
            .unwrap_or(0)
    };
    let mut child = spawn(&cfg);
    let deadline = Instant::now() + Duration::from_secs(60);
    while count_readings().await < 15_000 {
        assert!(Instant::now() < deadline, "no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let (status, _) = wait_exit(spawn(&cfg), Duration::from_secs(120));
    assert!(status.success());

    let pool = riverbed_sql::sqlite_pool(&dir.path().join("out.db"))
        .await
        .unwrap();
    let truth = sqlx::query("SELECT sensor_id, count(*), sum(value), min(value), max(value) FROM readings GROUP BY sensor_id ORDER BY sensor_id")
        .fetch_all(&pool)
        .await
        .unwrap();
    let stats =
        sqlx::query("SELECT sensor_id, count, sum, min, max FROM sensor_stats ORDER BY sensor_id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(truth.len(), 16);
    assert_eq!(stats.len(), 16);
    let mut total = 0;
    for (t, s) in truth.iter().zip(&stats) {
        assert_eq!(t.get::<String, _>(0), s.get::<String, _>(0));
        assert_eq!(
            t.get::<i64, _>(1),
            s.get::<i64, _>(1),
            "count of {}",
            t.get::<String, _>(0)
        );
        assert!(
            (t.get::<f64, _>(2) - s.get::<f64, _>(2)).abs() < 1e-6,
            "sum of {}",
            t.get::<String, _>(0)
        );
        assert_eq!(t.get::<f64, _>(3), s.get::<f64, _>(3));
        assert_eq!(t.get::<f64, _>(4), s.get::<f64, _>(4));
        total += t.get::<i64, _>(1);
    }
    let dead = riverbed_embedded::list_dead_letters(&log, Some("readings"), 1000)
        .await
        .unwrap()
        .len() as i64;
    assert_eq!(
        total + dead,
        100_000,
        "every reading is in the table or a dead letter"
    );
    assert!(
        dead >= 100,
        "the malformed readings were dead-lettered ({dead})"
    );
}
