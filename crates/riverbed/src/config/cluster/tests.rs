//! `[cluster]` sections checked, naming the field and the line.

use super::super::load_str;
use super::*;

const BASE: &str = r#"
[source]
kind = "amqp"
urls = ["amqp://guest:guest@127.0.0.1:5672/%2f"]
queue = "entities"

[[sinks]]
name = "out"
kind = "noop"
"#;

fn error(cluster: &str) -> String {
    load_str(&format!("{BASE}\n{cluster}"))
        .unwrap_err()
        .to_string()
}

#[test]
fn cluster_sections_are_checked_naming_the_field_and_line() {
    let plan = load_str(&format!(
        "{BASE}\n[cluster]\nmode = \"partitioned\"\npartitions = 4\n"
    ))
    .unwrap();
    assert!(matches!(plan.cluster, Some(ClusterPlan::Partitioned(n)) if n.get() == 4));
    let plan = load_str(&format!(
        "{BASE}\n[cluster]\nmode = \"singleton\"\nname = \"feed\"\npostgres = {{ url = \"postgres://u:secret@127.0.0.1/test\" }}\n"
    ))
    .unwrap();
    assert!(matches!(&plan.cluster, Some(ClusterPlan::Singleton(s)) if s.name == "feed"));
    assert!(
        !format!("{plan:?}").contains("secret"),
        "the lease URL is redacted"
    );

    let e = error("[cluster]\nmode = \"partitioned\"");
    assert!(
        e.contains("`cluster.partitions` is required") && e.contains("line 11"),
        "{e}"
    );
    let e = error("[cluster]\nmode = \"singleton\"\npostgres = { url = \"postgres://h/db\" }");
    assert!(e.contains("needs `cluster.name`"), "{e}");
    let e = error("[cluster]\nmode = \"singleton\"\nname = \"feed\"");
    assert!(e.contains("needs `cluster.postgres"), "{e}");
    let e = error("[cluster]\nmode = \"partitioned\"\npartitions = 4\npartiton = 1");
    assert!(
        e.contains("unknown field `partiton`") && e.contains("line 14"),
        "{e}"
    );
    let e = error("[cluster]\nmode = \"leaderless\"");
    assert!(e.contains("unknown variant `leaderless`"), "{e}");
    let e = error("[retry]\nmode = \"broker\"\n[cluster]\nmode = \"partitioned\"\npartitions = 2");
    assert!(e.contains("use `in_process`"), "{e}");
}

const OWN_COPY: &str = r#"
[source]
kind = "amqp"
urls = ["amqp://guest:guest@127.0.0.1:5672/%2f"]
queue = ""
exclusive = true
dead_letter_queue = "feed.dlq"
exchanges = [{ name = "feed", kind = "topic" }]
bindings = [{ exchange = "feed", routing_key = "odds.#" }]

[[sinks]]
name = "out"
kind = "noop"
"#;

fn own_copy_error(cluster: &str) -> String {
    load_str(&format!("{OWN_COPY}\n{cluster}"))
        .unwrap_err()
        .to_string()
}

#[test]
fn redundant_mode_needs_an_own_copy_and_a_dedup_store() {
    let plan = load_str(&format!(
        "{OWN_COPY}\n[cluster]\nmode = \"redundant\"\nname = \"feed\"\n\
         dedup = {{ redis = {{ url = \"redis://:secret@127.0.0.1:6379\" }}, id = \"/id\" }}\n"
    ))
    .unwrap();
    let Some(ClusterPlan::Redundant(r)) = &plan.cluster else {
        panic!("{:?}", plan.cluster)
    };
    assert!(
        matches!(&r.dedup, DedupPlan::Redis { id: riverbed_core::ClaimId::Pointer(p), .. } if p == "/id")
    );
    assert_eq!(r.prefix("out"), "riverbed:claims:feed:out:");
    assert!(
        !format!("{plan:?}").contains("secret"),
        "the Redis URL is redacted"
    );

    let e = own_copy_error("[cluster]\nmode = \"redundant\"\nname = \"feed\"");
    assert!(
        e.contains("needs `cluster.dedup") && e.contains("line 15"),
        "{e}"
    );
    let e = own_copy_error("[cluster]\nmode = \"redundant\"\ndedup = { inbox = true }");
    assert!(e.contains("needs `cluster.name`"), "{e}");
    let e =
        own_copy_error("[cluster]\nmode = \"redundant\"\nname = \"f\"\ndedup = { inbox = true }");
    assert!(
        e.contains("sink `out` is not a PostgreSQL inbox") && e.contains("line 18"),
        "{e}"
    );
    let e = own_copy_error(
        "[cluster]\nmode = \"redundant\"\nname = \"f\"\ndedup = { redis = { url = \"redis://h\" }, id = \"id\" }",
    );
    assert!(
        e.contains("`cluster.dedup.id` is `$message_id` or a JSON pointer"),
        "{e}"
    );
    let e = own_copy_error(
        "[cluster]\nmode = \"redundant\"\nname = \"f\"\ndedup = { redis = { url = \"redis://h\" }, ttl_ms = 3 }",
    );
    assert!(e.contains("unknown field `ttl_ms`"), "{e}");
    let e = error(
        "[cluster]\nmode = \"redundant\"\nname = \"f\"\ndedup = { redis = { url = \"redis://h\" } }",
    );
    assert!(
        e.contains("its own copy") && e.contains("server-named"),
        "{e}"
    );
}

#[test]
fn a_redis_lease_needs_its_redis_and_nothing_else() {
    let plan = load_str(&format!(
        "{BASE}\n[cluster]\nmode = \"singleton\"\nname = \"feed\"\nlease = \"redis\"\n\
         redis = {{ url = \"redis://127.0.0.1:6379\" }}\n"
    ))
    .unwrap();
    assert!(
        matches!(&plan.cluster, Some(ClusterPlan::Singleton(s)) if matches!(s.lease, LeasePlan::Redis(_)))
    );
    let e = error("[cluster]\nmode = \"singleton\"\nname = \"feed\"\nlease = \"redis\"");
    assert!(e.contains("lease = \"redis\" needs `cluster.redis"), "{e}");
    let e = error(
        "[cluster]\nmode = \"singleton\"\nname = \"feed\"\nredis = { url = \"redis://h\" }\npostgres = { url = \"postgres://h/db\" }",
    );
    assert!(
        e.contains("`cluster.redis` is for lease = \"redis\""),
        "{e}"
    );
    let e = error("[cluster]\nmode = \"partitioned\"\npartitions = 2\ndedup = { inbox = true }");
    assert!(
        e.contains("`cluster.dedup` is for mode = \"redundant\""),
        "{e}"
    );
}

const NATS: &str = r#"
[source]
kind = "nats"
stream = "ORDERS"
durable = "orders-{partition}"
filter_subject = "orders.{partition}.*"

[[sinks]]
name = "out"
kind = "noop"

[cluster]
mode = "partitioned"
partitions = 4
"#;

#[test]
fn nats_partitions_need_a_lease_and_a_durable_per_partition() {
    let lease = "name = \"orders\"\npostgres = { url = \"postgres://127.0.0.1/test\" }\n";
    let plan = load_str(&format!("{NATS}{lease}")).unwrap();
    let Some(ClusterPlan::NatsPartitioned {
        partitions,
        lease: l,
    }) = &plan.cluster
    else {
        panic!("{:?}", plan.cluster);
    };
    assert_eq!((partitions.get(), l.name.as_str()), (4, "orders"));
    let super::super::raw::SourceKind::Nats(source) = &plan.source else {
        panic!("a NATS source");
    };
    let one = nats_partition(source, 3);
    assert_eq!(one.durable, "orders-3");
    assert_eq!(one.filter_subject.as_deref(), Some("orders.3.*"));

    let e = load_str(NATS).unwrap_err().to_string();
    assert!(e.contains("needs `cluster.name`"), "{e}");
    let e = load_str(&format!("{NATS}name = \"orders\"\n"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("needs `cluster.postgres"), "{e}");
    let e = load_str(&format!(
        "{}{lease}",
        NATS.replace("orders-{partition}", "orders")
    ))
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("needs `{partition}`") && e.contains("line 12"),
        "{e}"
    );
    let e = load_str(&format!("[retry]\nmode = \"broker\"\n{NATS}{lease}"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("use `in_process`"), "{e}");
    let e = load_str(&format!(
        "{}{lease}",
        NATS.replace("partitions = 4", "partitions = 300")
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("between 1 and 256"), "{e}");
}
