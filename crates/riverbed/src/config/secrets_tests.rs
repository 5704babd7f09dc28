//! Secrets come from the environment or from files, and no error or printed value shows them.

use std::collections::HashMap;

use super::load_with_env;
use super::raw::SourceKind;

fn amqp(urls: &str) -> String {
    format!(
        "[pipeline]\nkey = \"/id\"\n\n[source]\nkind = \"amqp\"\n{urls}\nqueue = \"${{QUEUE:-orders}}\"\n\n[[sinks]]\nname = \"out\"\nkind = \"stdout\"\n"
    )
}

fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| vars.get(name).cloned()
}

/// The password and queue of the loaded AMQP source.
fn loaded(text: &str, vars: &[(&str, &str)]) -> (String, String) {
    let plan = load_with_env(text, &env(vars)).unwrap();
    let SourceKind::Amqp(source) = plan.source else {
        panic!("an amqp source");
    };
    let password = source.urls[0].uri().authority.userinfo.password.clone();
    (password, source.queue.clone())
}

#[test]
fn variables_expand_in_any_string_with_defaults_and_escapes() {
    let text = amqp(r#"urls = ["amqp://app:${AMQP_PASSWORD}@127.0.0.1:5672/%2f"]"#);
    let (password, queue) = loaded(&text, &[("AMQP_PASSWORD", "s3cret")]);
    assert_eq!((password.as_str(), queue.as_str()), ("s3cret", "orders"));
    let (_, queue) = loaded(&text, &[("AMQP_PASSWORD", "x"), ("QUEUE", "payments")]);
    assert_eq!(queue, "payments");
    let escaped = text.replace("${QUEUE:-orders}", "a$${QUEUE}$b");
    let (_, queue) = loaded(&escaped, &[("AMQP_PASSWORD", "x")]);
    assert_eq!(queue, "a${QUEUE}$b");
}

#[test]
fn a_missing_variable_is_named_with_its_line() {
    let text = amqp(r#"urls = ["amqp://app:${AMQP_PASSWORD}@127.0.0.1:5672/%2f"]"#);
    let e = load_with_env(&text, &env(&[])).unwrap_err().to_string();
    assert!(
        e.starts_with("line 6, column 9: environment variable `AMQP_PASSWORD` is not set"),
        "{e}"
    );
    let e = load_with_env(&text.replace("${AMQP_PASSWORD}", "${AMQP-PW}"), &env(&[]))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("line 6, column 9: `${AMQP-PW}`"), "{e}");
    let e = load_with_env(&text.replace("${AMQP_PASSWORD}", "${AMQP"), &env(&[]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("without a closing `}`"), "{e}");
}

#[test]
fn urls_come_from_files_and_never_show_in_errors() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("amqp-urls");
    std::fs::write(
        &file,
        "amqp://app:fr0m-f1le@127.0.0.1:5672/%2f\n\namqp://app:fr0m-f1le@127.0.0.2:5672/%2f\n",
    )
    .unwrap();
    let text = amqp(&format!("urls_file = \"{}\"", file.display()));
    let (password, _) = loaded(&text, &[]);
    assert_eq!(password, "fr0m-f1le");
    let e = load_with_env(
        &format!("{text}\n[admin]\nmetrics = \"${{SECRET}}\"\n"),
        &env(&[("SECRET", "hunter2-from-env")]),
    )
    .unwrap_err()
    .to_string();
    assert!(!e.contains("hunter2"), "{e}");
    let e = load_with_env(&text.replace("queue =", "urls = []\nqueue ="), &env(&[]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("`urls_file` and `urls` are both set"), "{e}");
    let missing = text.replace("amqp-urls", "nothing-here");
    let e = load_with_env(&missing, &env(&[])).unwrap_err().to_string();
    assert!(
        e.starts_with("line 6, column 13: `urls_file`: cannot read"),
        "{e}"
    );
}

#[test]
fn a_refused_value_from_the_environment_is_not_quoted() {
    let text = amqp(r#"urls = ["${AMQP_URL}"]"#);
    let e = load_with_env(&text, &env(&[("AMQP_URL", "amqp//app:s3cret-pw@host")]))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("line 6"), "{e}");
    assert!(!e.contains("s3cret"), "{e}");
    let e = load_with_env(
        &text.replace("queue = ", "prefetch = \"${N}\"\nqueue = "),
        &env(&[("AMQP_URL", "amqp://127.0.0.1"), ("N", "s3cret-count")]),
    )
    .unwrap_err()
    .to_string();
    assert!(!e.contains("s3cret") && e.contains("***"), "{e}");
}
