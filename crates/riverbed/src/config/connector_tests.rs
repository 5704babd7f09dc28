//! Connector sections (NATS, HTTP, outbox, feed) and the storm guard, checked naming the
//! field and the line.

use super::load_str;
use super::tests::{BASE, err};

const NATS: &str = r#"[source]
kind = "nats"
servers = ["nats://riverbed:s3cret@127.0.0.1:4222"]
stream = "ORDERS"
durable = "riverbed"

[[sinks]]
name = "copy"
kind = "nats"
subject = "copy.{key}"
"#;

#[test]
fn nats_source_sink_and_dead_letters_load_and_refuse_with_their_line() {
    let plan = load_str(&format!(
        "{NATS}\n[dead_letter]\nkind = \"nats\"\nsubject = \"dlq.orders\"\nstream = \"DLQ\"\n"
    ))
    .unwrap();
    assert!(matches!(plan.sinks[0].kind, super::SinkPlanKind::Nats(_)));
    let e = err(&NATS.replace("durable = \"riverbed\"", "durable = \"a.b\""));
    assert!(
        e.starts_with("line 1, column 1: `source`: invalid nats configuration: `durable`"),
        "{e}"
    );
    assert!(!e.contains("s3cret"), "{e}");
    let e = err(&NATS.replace("copy.{key}", "copy.{nope}"));
    assert!(e.starts_with("line 8, column 8: sink `copy`"), "{e}");
    let e = err(&format!(
        "[retry]\nmax_attempts = 5\n{}",
        NATS.replace(
            "durable = \"riverbed\"",
            "durable = \"riverbed\"\nmax_deliver = 5"
        )
    ));
    assert!(
        e.contains("`max_deliver` (5) must exceed `retry.max_attempts` (5)"),
        "{e}"
    );
    let e = err(&NATS.replace(
        "stream = \"ORDERS\"",
        "stream = \"ORDERS\"\nfilter_subject = \"a.*,b.*\"",
    ));
    assert!(
        e.contains("several filter subjects need nats-server 2.10"),
        "{e}"
    );
}

const HTTP: &str = r#"[source]
kind = "generate"
count = 10

[[sinks]]
name = "api"
kind = "http"
url = "https://api.example.com/orders/{key}"
method = "PUT"
headers = { Authorization = "Bearer secret-token" }
header_fields = { "X-Tenant" = "/tenant" }
body = "json_array"
timeout = "5s"

[sinks.breaker]
failure_ratio = 0.5
open_for = "30s"
"#;

#[test]
fn http_sinks_load_and_hide_their_header_values() {
    let plan = load_str(HTTP).unwrap();
    let super::SinkPlanKind::Http(h) = &plan.sinks[0].kind else {
        panic!("an http sink")
    };
    assert_eq!(h.method, "PUT");
    assert_eq!(h.breaker.open_for, std::time::Duration::from_secs(30));
    assert_eq!(h.body, riverbed_http::BodyFormat::JsonArray);
    let shown = format!("{plan:?}");
    assert!(!shown.contains("secret-token"), "{shown}");
}

#[test]
fn http_sink_errors_name_the_field_and_line() {
    let e = err(&HTTP.replace("timeout = \"5s\"", "timeout = \"5s\"\nretrys = 2"));
    assert!(
        e.starts_with("line 14, column 1: unknown field `retrys`"),
        "{e}"
    );
    let e = err(&HTTP.replace("\"json_array\"", "\"xml\""));
    assert!(
        e.starts_with("line 12, column 8: unknown variant `xml`"),
        "{e}"
    );
    let e = err(&HTTP.replace("api.example.com/", "{key}.example.com/"));
    assert!(e.starts_with("line 6, column 8: sink `api`"), "{e}");
    assert!(e.contains("`url`") && e.contains("path and query"), "{e}");
    let e = err(&HTTP.replace("failure_ratio = 0.5", "failure_ratio = 1.5"));
    assert!(
        e.contains("sink `api`") && e.contains("failure_ratio"),
        "{e}"
    );
    let e = err(&HTTP.replace("\"PUT\"", "\"GET\""));
    assert!(e.contains("`method`"), "{e}");
}

#[test]
fn storm_guard_is_on_by_default_and_checked_with_its_line() {
    let plan = load_str(BASE).unwrap();
    assert_eq!(plan.storm_guard, Some(riverbed_core::StormGuard::default()));
    let off = BASE.replace(
        "[pipeline]",
        "[pipeline.dead_letter_storm]\nenabled = false\n\n[pipeline]",
    );
    assert_eq!(load_str(&off).unwrap().storm_guard, None);
    let tuned = BASE.replace(
        "key = \"/id\"",
        "key = \"/id\"\ndead_letter_storm = { max_share = 0.9, window = 1000 }",
    );
    let guard = load_str(&tuned).unwrap().storm_guard.unwrap();
    assert_eq!(
        (guard.max_share, guard.window.get(), guard.min_sample.get()),
        (0.9, 1000, 50)
    );
    let e = err(&BASE.replace(
        "key = \"/id\"",
        "key = \"/id\"\ndead_letter_storm = { max_share = 1.5 }",
    ));
    assert!(
        e.starts_with("line 4, column 35: `pipeline.dead_letter_storm.max_share`"),
        "{e}"
    );
    let e = err(&BASE.replace(
        "key = \"/id\"",
        "key = \"/id\"\ndead_letter_storm = { window = 10, min_sample = 20 }",
    ));
    assert!(
        e.starts_with("line 4, column 49: `pipeline.dead_letter_storm.min_sample`"),
        "{e}"
    );
}

const OUTBOX: &str = r#"[source]
kind = "postgres_outbox"
table = "orders_outbox"
claim_size = 200
connection = { url = "postgres://app:s3cret@127.0.0.1:5432/app", max_connections = 6 }

[[sinks]]
name = "publish"
kind = "amqp"
urls = ["amqp://guest:guest@127.0.0.1:5672/%2f"]
exchange = "orders"
routing_key = "{key}"
"#;

#[test]
fn an_outbox_source_loads_and_its_errors_point_at_the_field() {
    let plan = load_str(OUTBOX).unwrap();
    let super::raw::SourceKind::PostgresOutbox(o) = &plan.source else {
        panic!("an outbox source");
    };
    assert_eq!(
        (o.table.as_str(), o.claim_size, o.max_claims),
        ("orders_outbox", 200, 4)
    );
    let e = err(&OUTBOX.replace("claim_size = 200", "claim_size = 0"));
    assert!(
        e.starts_with(
            "line 4, column 1: `source`: invalid configuration: `claim_size` must be more than 0"
        ),
        "{e}"
    );
    let e = err(&OUTBOX.replace("max_connections = 6", "max_connections = 4"));
    assert!(
        e.starts_with("line 5, column 66: `source`: invalid configuration: `connection.max_connections` (4) must be at least 6"),
        "{e}"
    );
    let e = err(&OUTBOX.replace("orders_outbox", "orders-outbox"));
    assert!(
        e.starts_with("line 3, column 1: `source`:") && e.contains("`table`"),
        "{e}"
    );
    let e = err(&OUTBOX.replace("claim_size = 200", "claim_sise = 200"));
    assert!(
        e.starts_with("line 4, column 1: unknown field `claim_sise`"),
        "{e}"
    );
    let e = err(&format!("[retry]\nmode = \"broker\"\n\n{OUTBOX}"));
    assert!(
        e.starts_with("line 4, column 1: `retry.mode = \"broker\"` needs a source"),
        "{e}"
    );
    assert!(!e.contains("s3cret"), "{e}");
}

#[test]
fn an_outbox_relays_to_nats_as_well() {
    let sinks = OUTBOX.find("[[sinks]]").unwrap();
    let text = format!(
        "{}[[sinks]]\nname = \"publish\"\nkind = \"nats\"\nsubject = \"orders.{{key}}\"\n",
        &OUTBOX[..sinks]
    );
    let plan = load_str(&text).unwrap();
    assert!(matches!(
        plan.source,
        super::raw::SourceKind::PostgresOutbox(_)
    ));
    assert!(matches!(plan.sinks[0].kind, super::SinkPlanKind::Nats(_)));
}

const FEED: &str = r##"[source]
kind = "amqp"
queue = ""
exclusive = true
bindings = [{ exchange = "sports-feed", routing_key = "#" }]

[[sinks]]
name = "out"
kind = "noop"

[feed]
name = "sports"
producers = [1, "live"]
alive_timeout = "20s"

[feed.recovery]
url = "http://127.0.0.1:8088/v1/{producer}/recovery"
min_interval = "30s"

[feed.state]
postgres = { url = "postgres://u:secret@127.0.0.1/test" }
"##;

#[test]
fn feed_sections_load_with_their_defaults() {
    let plan = load_str(FEED).unwrap();
    let feed = plan.feed.expect("a feed plan");
    assert_eq!(feed.producers, ["1", "live"]);
    assert_eq!(feed.table.as_str(), "riverbed_feed_producers");
    assert_eq!(feed.recovery_timeout, std::time::Duration::from_secs(300));
    assert_eq!(feed.messages.type_field, "/type");
    assert_eq!(feed.messages.snapshot_complete, "snapshot_complete");
    assert!(
        !format!("{feed:?}").contains("secret"),
        "the state URL is redacted"
    );
    let recipe = include_str!("../../../../recipes/sports-feed/singleton.toml");
    assert!(load_str(recipe).unwrap().feed.is_some(), "the recipe loads");
    let recipe = include_str!("../../../../recipes/sports-feed/redundant.toml");
    let plan = load_str(recipe).unwrap();
    assert!(matches!(
        plan.cluster,
        Some(super::ClusterPlan::Redundant(_))
    ));
}

#[test]
fn feed_sections_are_refused_naming_the_field_and_line() {
    let e = err(&FEED.replace("producers = [1, \"live\"]", "producers = []"));
    assert!(
        e.starts_with("line 13, column 13: `feed.producers` needs at least one"),
        "{e}"
    );
    let e = err(&FEED.replace("[1, \"live\"]", "[1, \"1\"]"));
    assert!(
        e.starts_with("line 13, column 13: `feed.producers` lists `1` twice"),
        "{e}"
    );
    let e = err(&FEED.replace("http://127.0.0.1:8088", "ftp://h"));
    assert!(
        e.starts_with("line 17, column 7: `feed.recovery.url`: scheme `ftp`"),
        "{e}"
    );
    let e = err(&FEED.replace(
        "min_interval = \"30s\"",
        "min_interval = \"30s\"\ntimeout = \"10s\"",
    ));
    assert!(
        e.contains("line 16") && e.contains("`feed.recovery.timeout` must be at least"),
        "{e}"
    );
    let e = err(&FEED.replace("alive_timeout", "alive_timout"));
    assert!(
        e.starts_with("line 14, column 1: unknown field `alive_timout`"),
        "{e}"
    );
    let e = err(&format!("{FEED}table = \"odds-state\"\n"));
    assert!(
        e.starts_with("line 22, column 9: `feed.state.table`:"),
        "{e}"
    );
    let e = err(&format!(
        "{FEED}\n[feed.messages]\nproducer = \"producer\"\n"
    ));
    assert!(
        e.starts_with("line 24, column 12: `feed.messages.producer` must be a JSON pointer"),
        "{e}"
    );
    let e = err(&format!(
        "{BASE}\n{}",
        &FEED[FEED.find("[feed]").unwrap()..]
    ));
    assert!(
        e.contains("`[feed]` tracks producers on an `amqp` source"),
        "{e}"
    );
}
