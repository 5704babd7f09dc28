//! Configuration errors name the field and the line; good files load.

use super::load_str;

pub(super) const BASE: &str = r#"[pipeline]
partitions = 2
key = "/id"

[source]
kind = "generate"
count = 10

[[sinks]]
name = "out"
kind = "stdout"
"#;

pub(super) fn err(text: &str) -> String {
    load_str(text)
        .expect_err("the file should be refused")
        .to_string()
}

#[test]
fn the_demo_and_a_minimal_file_load() {
    load_str(BASE).unwrap();
    let demo = crate::demo::DEMO_CONFIG.replace("{dir}", "/tmp/x");
    let plan = load_str(&demo).unwrap();
    assert_eq!(plan.sinks.len(), 2);
    assert_eq!(plan.processors.len(), 1);
}

#[test]
fn unknown_fields_are_refused_with_their_line() {
    let e = err(&BASE.replace("count = 10", "count = 10\nrat = 5"));
    assert!(
        e.starts_with("line 8, column 1: unknown field `rat`"),
        "{e}"
    );
    let e = err(&format!("{BASE}[sinks.batch]\nmax_sise = 3\n"));
    assert!(
        e.starts_with("line 13, column 1: unknown field `max_sise`, expected one of `max_size`"),
        "{e}"
    );
    let e = err(&BASE.replace("[pipeline]", "[pipeline]\nprefetch = 3"));
    assert!(
        e.starts_with("line 2, column 1: unknown field `prefetch`"),
        "{e}"
    );
}

#[test]
fn wrong_types_and_kinds_are_refused_with_their_line() {
    let e = err(&BASE.replace("count = 10", "count = \"ten\""));
    assert!(
        e.starts_with("line 7, column 9: invalid type: string \"ten\""),
        "{e}"
    );
    let e = err(&BASE.replace("kind = \"stdout\"", "kind = \"stdot\""));
    assert!(
        e.contains("line 11") && e.contains("unknown variant `stdot`"),
        "{e}"
    );
    let e = err(&BASE.replace("kind = \"generate\"\n", ""));
    assert!(
        e.starts_with("line 5, column 1: `source` needs `kind`, one of: amqp, embedded, generate"),
        "{e}"
    );
    let e = err(&BASE.replace("partitions = 2", "partitions = 0"));
    assert!(
        e.starts_with("line 2, column 14: `pipeline.partitions` must be at least 1"),
        "{e}"
    );
    let e = err(&BASE.replace("key = \"/id\"", "key = \"id\""));
    assert!(e.starts_with("line 3, column 7: `pipeline.key`:"), "{e}");
}

#[test]
fn semantic_errors_point_at_the_field() {
    let e = err(&format!("{BASE}input = \"aggregates\"\n"));
    assert!(
        e.starts_with(
            "line 12, column 9: sink `out` reads stream `aggregates`, which nothing emits"
        ),
        "{e}"
    );
    let sqlite = r#"
[[sinks]]
name = "t"
kind = "sqlite"
path = "x.db"
table = "bad-name"
key = ["id"]
columns = [{ name = "id", type = "text", from = "/id" }]
"#;
    let e = err(&format!("{BASE}{sqlite}"));
    assert!(
        e.starts_with("line 17, column 9: `table`: `bad-name` is not a valid SQL identifier"),
        "{e}"
    );
    let e = err(&format!(
        "{BASE}{}",
        sqlite
            .replace("bad-name", "t")
            .replace("from = \"/id\"", "from = \"id\"")
    ));
    assert!(
        e.contains("line 19") && e.contains("`columns.from`: `id` is not a value source"),
        "{e}"
    );
    let e = err(&format!(
        "{BASE}{}",
        sqlite
            .replace("bad-name", "t")
            .replace("key = [\"id\"]", "key = [\"nope\"]")
    ));
    assert!(
        e.contains("key column `nope` is not among the columns"),
        "{e}"
    );
    let dup = format!("{BASE}[[sinks]]\nname = \"out\"\nkind = \"noop\"\n");
    assert!(
        err(&dup).starts_with("line 13, column 8: two sinks are named `out`"),
        "{}",
        err(&dup)
    );
}

#[test]
fn errors_show_the_offending_line() {
    let e = err(&BASE.replace("count = 10", "count = -1"));
    assert!(e.contains("\n  | count = -1\n  |         ^"), "{e}");
}

#[test]
fn postgres_redis_sinks_and_tasks_load() {
    let text = r#"
[source]
kind = "generate"
data = "transactions"
count = 10

[[sinks]]
name = "history"
kind = "postgres"
connection = { url = "postgres://postgres:secret@127.0.0.1:5432/test" }
mode = "append"
table = "historical_transactions"
key = ["id"]
columns = [
  { name = "id", type = "text", from = "/id" },
  { name = "amount", type = "numeric", from = "/amount" },
]

[[sinks]]
name = "counters"
kind = "redis_hash_incr"
redis = { url = "redis://127.0.0.1:6379" }
key = "aggregator"
field = "/provider"
amount = "/amount"

[[tasks]]
name = "per_minute"
kind = "window_counter"
postgres = { url = "postgres://postgres@127.0.0.1:5432/test" }
redis = { url = "redis://127.0.0.1:6379" }
query = "SELECT provider, count(*), sum(amount) FROM historical_transactions GROUP BY provider"
"#;
    let plan = load_str(text).unwrap();
    assert_eq!(plan.sinks.len(), 2);
    assert_eq!(plan.tasks.len(), 1);
    assert!(
        !format!("{plan:?}").contains("secret"),
        "credentials never reach Debug output"
    );
    let e = load_str(&text.replace("mode = \"append\"", "mode = \"append\"\nversion = \"v\""))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("sink `history`") && e.contains("need mode = \"upsert\""),
        "{e}"
    );
    let e = load_str(&text.replace("query = ", "qurey = "))
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown field `qurey`"), "{e}");
    // The window counter writes `totals:<provider>` (its default layout): a counter
    // incrementing the same keys would count in-flight messages twice after a restart.
    let e = load_str(&text.replace("key = \"aggregator\"", "key = \"totals:{/provider}\""))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("line 20, column 8: sink `counters` increments keys `totals:{/provider}` that task `per_minute` also writes"),
        "{e}"
    );
}

#[test]
fn totals_of_a_postgres_sink_are_checked_naming_the_field_and_line() {
    let text = |totals: &str| {
        format!(
            r#"
[source]
kind = "generate"
data = "transactions"
count = 10

[[sinks]]
name = "history"
kind = "postgres"
connection = {{ url = "postgres://postgres@127.0.0.1:5432/test" }}
mode = "append"
table = "historical_transactions"
key = ["id"]
columns = [
  {{ name = "id", type = "text", from = "/id" }},
  {{ name = "provider", type = "text", from = "/provider", required = true }},
  {{ name = "amount", type = "numeric", from = "/amount" }},
]
totals = {totals}
"#
        )
    };
    let ok = r#"{ table = "t_totals", group = ["provider"], sum = { sum = "amount" } }"#;
    assert!(load_str(&text(ok)).is_ok());
    let e = load_str(&text(&ok.replace("\"provider\"]", "\"amount\"]")))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("line 8, column 8: sink `history`: invalid configuration: totals.group: column `amount` must be `required`"),
        "{e}"
    );
    let e = load_str(&text(&ok.replace("sum = {", "summ = {")))
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown field `summ`"), "{e}");
}

#[test]
fn quoted_lines_never_show_passwords() {
    let line = r#"urls = ["amqp://app:s3cret@rabbit:5672/%2f", "amqp://rabbit-2"], x = "postgres://u:p@db/test""#;
    let r = super::load::redact_credentials(line);
    assert_eq!(
        r,
        r#"urls = ["amqp://***@rabbit:5672/%2f", "amqp://rabbit-2"], x = "postgres://***@db/test""#
    );
    let text =
        "[source]\nkind = \"amqp\"\nurls = [\"amqp://app:s3cret@127.0.0.1:5672\"]\nqueue = 5\n";
    let e = load_str(text).unwrap_err().to_string();
    assert!(!e.contains("s3cret"), "{e}");
    let text = "[source]\nkind = \"amqp\"\nurls = [\"amqp://app:s3cret@127.0.0.1:5672\"] ; \n";
    let e = load_str(text).unwrap_err().to_string();
    assert!(!e.contains("s3cret"), "{e}");
}

#[test]
fn quoted_lines_never_show_passwords_with_url_delimiters() {
    for c in ["#", "/", "?", "@", "%"] {
        for scheme in ["amqp", "amqps", "postgres", "redis", "rediss", "http"] {
            let line = format!(r#"url = "{scheme}://app:hunter{c}2@db.example:5432/x", n = 1"#);
            let shown = super::load::redact_credentials(&line);
            assert!(!shown.contains("hunter"), "{line} shown as {shown}");
            assert!(!shown.contains("2@"), "{line} shown as {shown}");
            assert!(shown.ends_with(", n = 1"), "{line} shown as {shown}");
        }
    }
}

#[tokio::test]
async fn a_generator_that_skips_continues_where_an_earlier_run_stopped() {
    use riverbed_core::Source;
    let first = BASE.replace("count = 10", "data = \"orders\"\ncount = 3");
    let later = BASE.replace("count = 10", "data = \"orders\"\ncount = 2\nskip = 3");
    let mut ids = Vec::new();
    let mut payloads = Vec::new();
    for text in [first, later] {
        let super::raw::SourceKind::Generate(g) = load_str(&text).unwrap().source else {
            panic!("a generate source");
        };
        let mut source = super::build::generate_source(&g);
        let mut out = Vec::new();
        while source.recv(&mut out, 100).await.unwrap() {}
        for d in out {
            ids.push(d.message.meta.message_id.unwrap());
            let mut v: serde_json::Value = serde_json::from_slice(&d.message.payload).unwrap();
            v.as_object_mut().unwrap().remove("created_at");
            payloads.push(v);
        }
    }
    assert_eq!(ids, ["ord-0", "ord-1", "ord-2", "ord-3", "ord-4"]);
    let mut generator =
        riverbed_embedded::Generator::new(riverbed_embedded::DataKind::Orders, 0, 20, None);
    for p in payloads {
        let mut v: serde_json::Value =
            serde_json::from_slice(&generator.next_record().payload).unwrap();
        v.as_object_mut().unwrap().remove("created_at");
        assert_eq!(p, v, "the same values as one continuous run");
    }
    let e = err(&BASE.replace("count = 10", "count = 10\nskip = 5\nrate = 100"));
    assert!(
        e.starts_with("line 5, column 1: `source`: `skip` cannot be combined with `rate`"),
        "{e}"
    );
}

#[test]
fn classic_retry_queues_are_refused_naming_the_field_and_line() {
    let amqp = "[source]\nkind = \"amqp\"\nurls = [\"amqp://127.0.0.1\"]\nqueue = \"orders\"\n";
    let text = BASE.replace("[source]\nkind = \"generate\"\ncount = 10\n", amqp);
    load_str(&text).unwrap();
    let e = err(&format!(
        "{text}\n[source.retry]\nqueue_type = \"classic\"\n"
    ));
    assert!(
        e.starts_with("line 5, column 1: `source`:") && e.contains("`retry.queue_type`"),
        "{e}"
    );
    assert!(e.contains("at most once"), "{e}");
}

#[test]
fn max_deliveries_defaults_to_20_and_must_be_positive() {
    assert_eq!(load_str(BASE).unwrap().max_deliveries.get(), 20);
    let set = format!("{BASE}\n[retry]\nmax_deliveries = 7\n");
    assert_eq!(load_str(&set).unwrap().max_deliveries.get(), 7);
    let e = err(&set.replace("= 7", "= 0"));
    assert!(
        e.starts_with("line 14, column 18: `retry.max_deliveries` must be at least 1"),
        "{e}"
    );
}
