//! `riverbed demo` works with nothing installed, shows its dead letters, and `validate` /
//! `dlq` behave.

use std::process::Command;

fn riverbed(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_riverbed"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn the_demo_runs_end_to_end_on_the_embedded_default() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("demo");
    let out = riverbed(&[
        "demo",
        "--count",
        "30000",
        "--malformed-every",
        "3000",
        "--dir",
        d.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("processed 30000  acked 29990  dead-lettered 10"),
        "{stdout}"
    );
    assert!(
        stdout.contains("5 x malformed_payload") && stdout.contains("5 x missing_key"),
        "{stdout}"
    );
    assert!(stdout.contains("rows in readings: 29990"), "{stdout}");

    let list = riverbed(&["dlq", "list", d.join("log.db").to_str().unwrap()]);
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 10);
    assert!(
        lines
            .iter()
            .all(|l| l["attempts"] == 1 && l["stage"] == "key")
    );
    let redrive = riverbed(&[
        "dlq",
        "redrive",
        d.join("log.db").to_str().unwrap(),
        "--topic",
        "readings",
    ]);
    assert!(String::from_utf8_lossy(&redrive.stdout).contains("redrove 10 dead letters"));
}

#[test]
fn validate_accepts_the_demo_file_and_refuses_a_broken_one() {
    let dir = tempfile::tempdir().unwrap();
    let printed = riverbed(&["demo", "--print-config", "--dir", "/tmp/x"]);
    let good = dir.path().join("good.toml");
    std::fs::write(&good, &printed.stdout).unwrap();
    let ok = riverbed(&["validate", good.to_str().unwrap()]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(
        String::from_utf8_lossy(&ok.stdout).contains("ok (1 processors, 2 sinks, 4 partitions)")
    );

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        String::from_utf8_lossy(&printed.stdout)
            .replace("max_in_flight = 4096", "max_in_flight = 4096\nprefech = 10"),
    )
    .unwrap();
    let refused = riverbed(&["validate", bad.to_str().unwrap()]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("bad.toml: line 8, column 1: unknown field `prefech`"),
        "{err}"
    );
}
