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
        &format!("{text}\n[admin]\nlisten = \"${{SECRET}}\"\n"),
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

#[test]
fn tls_sections_load_from_a_pipeline_file_and_misspellings_name_their_line() {
    let text = r#"[pipeline]
key = "/id"

[source]
kind = "amqp"
urls = ["amqps://app:${AMQP_PASSWORD}@rabbit.example:5671/%2f"]
queue = "orders"
tls = { ca_file = "${CA_FILE:-/etc/riverbed/ca.pem}" }

[[sinks]]
name = "history"
kind = "postgres"
mode = "append"
table = "history"
key = ["id"]
columns = [{ name = "id", type = "text", from = "/id" }]

[sinks.connection]
url_file = "${PG_URL_FILE}"
ssl_mode = "verify-full"
tls = { ca_file = "${CA_FILE:-/etc/riverbed/pg-ca.pem}" }
"#;
    let dir = tempfile::tempdir().unwrap();
    let url_file = dir.path().join("pg");
    std::fs::write(&url_file, "postgres://app:pg-s3cret@db.example/ledger\n").unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(
        &ca_file,
        "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let vars = [
        ("AMQP_PASSWORD", "amqp-s3cret"),
        ("PG_URL_FILE", url_file.to_str().unwrap()),
        ("CA_FILE", ca_file.to_str().unwrap()),
    ];
    let plan = load_with_env(text, &env(&vars)).unwrap();
    let SourceKind::Amqp(source) = &plan.source else {
        panic!("an amqp source");
    };
    let ca = source
        .tls
        .as_ref()
        .and_then(|t| t.ca_file.as_ref())
        .unwrap();
    assert_eq!(ca, &ca_file);
    let super::SinkPlanKind::Postgres(sink) = &plan.sinks[0].kind else {
        panic!("a postgres sink");
    };
    assert_eq!(
        sink.connection.ssl_mode,
        Some(riverbed_sql::SslMode::VerifyFull)
    );
    assert_eq!(
        sink.connection.url.expose(),
        "postgres://app:pg-s3cret@db.example/ledger"
    );
    assert!(
        !format!("{sink:?}").contains("s3cret"),
        "Debug hides the password"
    );

    let e = load_with_env(
        &text.replace(
            "ca_file = \"${CA_FILE:-/etc/riverbed/pg",
            "ca_fil = \"${CA_FILE:-/etc/riverbed/pg",
        ),
        &env(&vars),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("line 21, column 9: unknown field `ca_fil`"),
        "{e}"
    );
    assert!(!e.contains("s3cret"), "{e}");
    let pg_tls = "tls = { ca_file = \"${CA_FILE:-/etc/riverbed/pg-ca.pem}\" }\n";
    let e = load_with_env(&text.replace(pg_tls, ""), &env(&vars[..2]))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("invalid amqp configuration: tls.ca_file: cannot read /etc/riverbed/ca.pem"),
        "{e}"
    );
}

#[test]
fn tls_files_and_urls_of_postgres_and_redis_sinks_are_checked_at_validate() {
    let sink = |body: &str| {
        format!(
            "[pipeline]\nkey = \"/id\"\n\n[source]\nkind = \"generate\"\ncount = 1\n\n[[sinks]]\nname = \"out\"\n{body}\n"
        )
    };
    let pg = sink(
        "kind = \"postgres\"\nmode = \"append\"\ntable = \"t\"\nkey = [\"id\"]\n\
         columns = [{ name = \"id\", type = \"text\", from = \"/id\" }]\n\
         connection = { url = \"postgres://db/x\", tls = { ca_file = \"/nonexistent/pg-ca.pem\" } }",
    );
    let e = load_with_env(&pg, &env(&[])).unwrap_err().to_string();
    assert!(
        e.starts_with("line 9, column 8: sink `out`: invalid configuration: tls.ca_file: cannot read /nonexistent/pg-ca.pem"),
        "{e}"
    );
    let redis = sink(
        "kind = \"redis_latest\"\nkey = \"k:{/id}\"\nversion = \"/v\"\n\
         redis = { url = \"redis://127.0.0.1\", tls = { ca_file = \"/x.pem\" } }",
    );
    let e = load_with_env(&redis, &env(&[])).unwrap_err().to_string();
    assert!(
        e.starts_with("line 9, column 8: sink `out`:") && e.contains("`tls` needs a rediss:// url"),
        "{e}"
    );
}
