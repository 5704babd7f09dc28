//! A window counter whose table the pipeline's own sink creates (`create_table = true`) starts
//! on a fresh database: the sink creates its table before the startup reconciliation queries
//! it. A reconciliation that fails says why once, not nested.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
const REDIS_URL: &str = "redis://127.0.0.1:6379";

fn available() -> bool {
    use riverbed_core::testing::require_service;
    require_service("PostgreSQL", "127.0.0.1:5432") && require_service("Redis", "127.0.0.1:6379")
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}_{}_{nanos}", std::process::id())
}

/// A pipeline of 40 generated transactions into `table` (created by the sink), with a window
/// counter over `counted`.
fn config(table: &str, counted: &str, prefix: &str) -> String {
    format!(
        r#"[source]
kind = "generate"
data = "transactions"
count = 40

[pipeline]
key = "/provider"

[[sinks]]
name = "ledger"
kind = "postgres"
mode = "append"
table = "{table}"
key = ["id"]
create_table = true
columns = [
  {{ name = "id", type = "text", from = "/id", required = true }},
  {{ name = "provider", type = "text", from = "/provider", required = true }},
  {{ name = "amount", type = "numeric", from = "/amount", required = true }},
]
[sinks.connection]
url = "{PG_URL}"

[dead_letter]
kind = "log"

[[tasks]]
name = "totals"
kind = "window_counter"
every = "1h"
query = "SELECT provider, count(*) AS count FROM {counted} GROUP BY provider"
layout = {{ type = "hash_per_group", prefix = "{prefix}" }}
postgres = {{ url = "{PG_URL}" }}
redis = {{ url = "{REDIS_URL}" }}
"#
    )
}

/// Runs `riverbed run` on `text` and waits at most 60 s for it to exit.
fn run(text: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.toml");
    std::fs::write(&path, text).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_riverbed"))
        .args(["run", "--quiet"])
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("riverbed did not exit within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

fn psql(sql: &str) -> String {
    let out = Command::new("psql")
        .args([PG_URL, "-tAc", sql])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test]
async fn the_sink_creates_its_table_before_the_window_counter_reconciles() {
    if !available() {
        return;
    }
    let _redis = riverbed_core::testing::lock_service("redis", false).await;
    let table = unique("wc_fresh");
    let out = run(&config(&table, &table, &format!("{table}:")));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let rows = psql(&format!("SELECT count(*) FROM {table}"));
    psql(&format!("DROP TABLE IF EXISTS {table}"));
    assert!(out.status.success(), "riverbed failed: {stderr}");
    assert_eq!(rows, "40");
}

#[tokio::test]
async fn a_failed_reconciliation_says_the_database_error_once() {
    if !available() {
        return;
    }
    let _redis = riverbed_core::testing::lock_service("redis", false).await;
    let (table, missing) = (unique("wc_present"), unique("wc_missing"));
    let out = run(&config(&table, &missing, &format!("{table}:")));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    psql(&format!("DROP TABLE IF EXISTS {table}"));
    assert!(
        !out.status.success(),
        "a query on a missing table must fail"
    );
    assert!(stderr.contains("reconciling `totals` at start"), "{stderr}");
    assert_eq!(
        stderr.matches("does not exist").count(),
        1,
        "the database error once: {stderr}"
    );
    assert_eq!(stderr.matches("database error").count(), 1, "{stderr}");
}
