//! The log filter through the binary: `RUST_LOG` is honoured, `RIVERBED_LOG` wins over it,
//! and an invalid filter stops the command with a clear error and a non-zero exit.

use std::process::{Command, Output};

/// Runs a small demo with the given log variables (and no others).
fn demo(env: &[(&str, &str)]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_riverbed"));
    cmd.args(["demo", "--count", "50", "--dir"])
        .arg(dir.path().join("demo"))
        .env_remove("RUST_LOG")
        .env_remove("RIVERBED_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn rust_log_is_honoured_when_riverbed_log_is_unset() {
    let quiet = demo(&[]);
    assert!(quiet.status.success(), "{}", stderr(&quiet));
    assert!(!stderr(&quiet).contains(" INFO "), "{}", stderr(&quiet));
    let info = demo(&[("RUST_LOG", "info")]);
    assert!(info.status.success(), "{}", stderr(&info));
    assert!(stderr(&info).contains(" INFO "), "{}", stderr(&info));
}

#[test]
fn riverbed_log_wins_over_rust_log() {
    let out = demo(&[("RUST_LOG", "info"), ("RIVERBED_LOG", "error")]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains(" INFO "), "{}", stderr(&out));
    // An invalid RUST_LOG does not matter when RIVERBED_LOG decides.
    let out = demo(&[("RUST_LOG", "riverbed=loud"), ("RIVERBED_LOG", "error")]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn an_invalid_filter_is_an_error_not_a_silent_fallback() {
    for (var, value) in [
        ("RUST_LOG", "riverbed=loud"),
        ("RIVERBED_LOG", "[[nonsense"),
    ] {
        let out = demo(&[(var, value)]);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{var}={value}: {}",
            stderr(&out)
        );
        let err = stderr(&out);
        assert!(
            err.contains("invalid log filter") && err.contains(value),
            "{err}"
        );
        assert!(err.contains(var), "names where the filter came from: {err}");
        assert!(out.stdout.is_empty(), "nothing ran");
    }
}
