//! The dead-letter storm guard through the binary: a pipeline whose every message is
//! dead-lettered stops with a clear error and a non-zero exit after the guard's sample,
//! instead of emptying its source into the dead-letter file; turned off, it dead-letters all.

use std::process::{Command, Output};

/// Runs `riverbed run` on 2,000 generated messages that all fail (no `/sensor_id` or not
/// JSON), with `guard` as the `[pipeline.dead_letter_storm]` table; returns the output and
/// the number of dead letters stored.
fn run(guard: &str) -> (Output, usize) {
    let dir = tempfile::tempdir().unwrap();
    let dlq = dir.path().join("dlq.jsonl");
    let config = dir.path().join("pipeline.toml");
    let text = format!(
        r#"
[pipeline]
key = "/sensor_id"

[pipeline.dead_letter_storm]
{guard}

[source]
kind = "generate"
count = 2000
malformed_every = 1

[[sinks]]
name = "out"
kind = "noop"

[dead_letter]
kind = "file"
path = "{}"
"#,
        dlq.display()
    );
    std::fs::write(&config, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_riverbed"))
        .args(["run", "--quiet"])
        .arg(&config)
        .env("RIVERBED_LOG", "warn")
        .output()
        .unwrap();
    let letters = std::fs::read_to_string(&dlq)
        .map(|t| t.lines().count())
        .unwrap_or(0);
    (out, letters)
}

#[test]
fn storm_of_dead_letters_stops_riverbed_run_with_an_error() {
    let (out, letters) = run("max_share = 0.5\nwindow = 100\nmin_sample = 50");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the run fails: {stderr}");
    assert!(
        stderr.contains("dead-letter storm: 50 of the last 50 settled messages were dead-lettered"),
        "{stderr}"
    );
    assert!(
        stderr.contains("Dead-letter storm"),
        "the log line: {stderr}"
    );
    assert_eq!(letters, 50, "the guard stopped after its sample");
}

#[test]
fn storm_guard_turned_off_dead_letters_everything() {
    let (out, letters) = run("enabled = false");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(letters, 2000);
}
