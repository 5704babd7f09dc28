//! `riverbed validate` reads secrets from the environment and from files, names a missing
//! variable with its line, and never prints a secret.

use std::process::Command;

const PIPELINE: &str = r#"[pipeline]
key = "/id"

[source]
kind = "amqp"
urls = ["amqp://app:${RIVERBED_TEST_AMQP_PASSWORD}@127.0.0.1:5672/%2f"]
queue = "orders"
queue_type = "${RIVERBED_TEST_QUEUE_TYPE:-quorum}"

[[sinks]]
name = "out"
kind = "stdout"
"#;

/// Runs `riverbed validate` on `text` with `vars` set; (success, stdout + stderr).
fn validate(text: &str, vars: &[(&str, &str)]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pipeline.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_riverbed"))
        .arg("validate")
        .arg(&path)
        .env_remove("RIVERBED_TEST_AMQP_PASSWORD")
        .envs(vars.iter().copied())
        .output()
        .unwrap();
    let shown = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), shown)
}

#[test]
fn validate_names_a_missing_variable_and_never_prints_a_secret() {
    let (ok, shown) = validate(PIPELINE, &[]);
    assert!(!ok, "{shown}");
    assert!(
        shown.contains(
            "line 6, column 9: environment variable `RIVERBED_TEST_AMQP_PASSWORD` is not set"
        ),
        "{shown}"
    );

    let (ok, shown) = validate(PIPELINE, &[("RIVERBED_TEST_AMQP_PASSWORD", "s3cret-pw")]);
    assert!(ok, "{shown}");
    assert!(!shown.contains("s3cret"), "{shown}");

    let vars = [
        ("RIVERBED_TEST_AMQP_PASSWORD", "s3cret-pw"),
        ("RIVERBED_TEST_QUEUE_TYPE", "s3cret-pw"),
    ];
    let (ok, shown) = validate(PIPELINE, &vars);
    assert!(!ok, "{shown}");
    assert!(shown.contains("line 8"), "{shown}");
    assert!(!shown.contains("s3cret"), "{shown}");
}

#[test]
fn validate_reads_urls_from_a_file_and_never_prints_them() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("amqp-url");
    std::fs::write(&file, "amqp://app:s3cret-pw@127.0.0.1:5672/%2f\n").unwrap();
    let text = PIPELINE.replace(
        r#"urls = ["amqp://app:${RIVERBED_TEST_AMQP_PASSWORD}@127.0.0.1:5672/%2f"]"#,
        &format!("urls_file = \"{}\"", file.display()),
    );
    let (ok, shown) = validate(&text, &[]);
    assert!(ok, "{shown}");
    let (ok, shown) = validate(&text.replace("\"orders\"", "5"), &[]);
    assert!(!ok, "{shown}");
    assert!(!shown.contains("s3cret"), "{shown}");
}
