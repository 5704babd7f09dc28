//! The embedded dead-letter table through the same commands, by log file and by pipeline file.

use super::{dlq, json_lines, riverbed, texts};

#[test]
fn dlq_commands_work_on_the_embedded_dead_letter_table() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("demo");
    let d_str = d.to_str().unwrap();
    let out = riverbed(&[
        "demo",
        "--count",
        "2000",
        "--malformed-every",
        "200",
        "--dir",
        d_str,
    ]);
    assert!(out.status.success(), "{}", texts(&out).1);
    let log = d.join("log.db");
    let log = log.to_str().unwrap();
    let printed = riverbed(&["demo", "--print-config", "--dir", d_str]);
    let file = dir.path().join("demo.toml");
    std::fs::write(&file, &printed.stdout).unwrap();
    let f = file.to_str().unwrap();

    let all = json_lines(&dlq(&["list", log]));
    assert_eq!(all.len(), 10);
    assert_eq!(
        json_lines(&dlq(&["list", f])),
        all,
        "the pipeline file finds the same table"
    );
    let missing = json_lines(&dlq(&["list", log, "--filter", "reason=missing_key"]));
    assert_eq!(missing.len(), 5);
    assert!(dlq(&["list", log, "--since", "2099-01-01T00:00:00Z"]).is_empty());
    let id = all[0]["id"].to_string();
    let shown: serde_json::Value = serde_json::from_str(&dlq(&["show", log, &id])).unwrap();
    assert_eq!(shown["id"], all[0]["id"]);
    assert!(shown["payload"].is_string() && shown["headers"].is_object());
    let bad = riverbed(&["dlq", "show", log, "m1"]);
    assert!(
        texts(&bad)
            .1
            .contains("not an id of an embedded log's dead letter")
    );

    let out = dlq(&["redrive", f, "--filter", "reason=missing_key"]);
    assert!(
        out.contains("redrove 5 dead letters into readings"),
        "{out}"
    );
    let left = json_lines(&dlq(&["list", log]));
    assert!(left.len() == 5 && left.iter().all(|l| l["reason"] == "malformed_payload"));

    assert!(
        !riverbed(&["dlq", "purge", log]).status.success(),
        "needs --yes"
    );
    let one = left[0]["id"].to_string();
    let purged: serde_json::Value =
        serde_json::from_str(&dlq(&["purge", log, &one, "--yes"])).unwrap();
    assert_eq!(purged["purged"], 1);
    let purged: serde_json::Value = serde_json::from_str(&dlq(&["purge", log, "--yes"])).unwrap();
    assert_eq!(purged["purged"], 4);
    assert!(dlq(&["list", log]).is_empty());
}
