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

#[tokio::test]
async fn a_refused_password_from_the_environment_is_not_logged() {
    if !riverbed_core::testing::require_service("RabbitMQ", "127.0.0.1:5672") {
        return;
    }
    let _shared = riverbed_core::testing::lock_service("rabbitmq", false).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pipeline.toml");
    let text = PIPELINE.replace("\"orders\"", "\"riverbed-secrets-refused\"\npassive = true");
    std::fs::write(&path, text).unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_riverbed"))
        .arg("run")
        .arg(&path)
        .env("RIVERBED_TEST_AMQP_PASSWORD", "n0t-the-pw%23x")
        .env("RIVERBED_LOG", "debug")
        .output();
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        tokio::task::spawn_blocking(move || run),
    )
    .await
    .expect("a refused login ends the run")
    .unwrap()
    .unwrap();
    let shown = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{shown}");
    assert!(
        shown.contains("ACCESS_REFUSED") || shown.contains("access"),
        "{shown}"
    );
    assert!(!shown.contains("n0t-the-pw"), "{shown}");
}
