//! Configuration: what users write parses, mistakes are refused naming the field, and
//! credentials never show. No broker needed.

use riverbed_amqp::{
    AmqpDeadLetterConfig, AmqpDeadLetters, AmqpSink, AmqpSinkConfig, AmqpSource, AmqpSourceConfig,
    Error,
};
use riverbed_core::Source;

fn source(text: &str) -> Result<AmqpSource, Error> {
    let config: AmqpSourceConfig = toml::from_str(text).expect("parses");
    AmqpSource::new(config)
}

fn field_of(e: Error) -> String {
    match e {
        Error::Config { field, .. } => field,
        other => panic!("expected a configuration error, got {other}"),
    }
}

#[test]
fn a_full_source_configuration_parses() {
    let s = source(
        r#"
        urls = ["amqp://app:s3cret@10.0.0.1:5672/prod", "amqp://app:s3cret@10.0.0.2:5672/prod"]
        queue = "orders"
        queue_type = "quorum"
        single_active_consumer = true
        queue_arguments = { "x-max-length" = 100000 }
        prefetch = 2000
        consumer_tag = "riverbed-orders"
        ack_interval = "10ms"
        reconnect_max = "30s"
        dead_letter_queue = "orders.dead"
        exchanges = [
            { name = "orders", kind = "topic" },
            { name = "orders.by-header", kind = "headers", alternate_exchange = "orders.unrouted" },
        ]
        bindings = [
            { exchange = "orders", routing_key = "order.*" },
            { exchange = "orders.by-header", arguments = { "x-match" = "all", "region" = "eu" } },
        ]
        [retry]
        queue_prefix = "orders.wait"
        queue_type = "quorum"
        "#,
    )
    .unwrap();
    assert!(s.capabilities().delayed_retry);
    let dlq = s.dead_letter_queue().expect("a dead-letter queue");
    assert_eq!(dlq.queue(), "orders.dead");
    let shown = format!(
        "{} {:?}",
        s.describe(),
        toml::from_str::<AmqpSourceConfig>("urls = [\"amqp://app:s3cret@10.0.0.1:5672/prod\"]")
            .unwrap()
    );
    assert!(
        !shown.contains("s3cret") && !shown.contains("app:"),
        "{shown}"
    );
    assert!(shown.contains("10.0.0.1:5672"), "{shown}");
}

#[test]
fn defaults_follow_the_kind_of_queue() {
    let named = source("queue = \"jobs\"").unwrap();
    assert!(
        named.capabilities().delayed_retry,
        "named queues retry through the broker"
    );
    assert_eq!(named.dead_letter_queue().unwrap().queue(), "jobs.dlq");

    let private = source("queue = \"\"").unwrap();
    assert!(
        !private.capabilities().delayed_retry,
        "a server-named queue cannot be a retry target"
    );
    assert!(
        private.dead_letters().is_none(),
        "a server-named queue needs an explicit dlq"
    );

    let stream =
        source("queue = \"events\"\nqueue_type = \"stream\"\nstream_offset = \"first\"").unwrap();
    assert!(!stream.capabilities().delayed_retry);
    assert!(source("queue = \"events\"\nqueue_type = \"stream\"\nstream_offset = 42").is_ok());
    assert!(
        source(
            "queue = \"events\"\nqueue_type = \"stream\"\nstream_offset = \"2024-05-01T00:00:00Z\""
        )
        .is_ok()
    );
}

#[test]
fn mistakes_name_their_field() {
    let cases = [
        ("queue = \"q\"\nprefetch = 0", "prefetch"),
        ("queue = \"q\"\nprefetch = 70000", "prefetch"),
        ("queue = \"q\"\nstream_offset = \"first\"", "stream_offset"),
        (
            "queue = \"s\"\nqueue_type = \"stream\"\nstream_offset = \"yesterday\"",
            "stream_offset",
        ),
        (
            "queue = \"s\"\nqueue_type = \"stream\"\nexclusive = true",
            "queue_type",
        ),
        ("queue = \"\"\nqueue_type = \"quorum\"", "queue"),
        ("queue = \"\"\n[retry]\nenabled = true", "retry.enabled"),
        (
            "queue = \"q\"\n[retry]\nqueue_type = \"stream\"",
            "retry.queue_type",
        ),
        (
            "queue = \"q\"\n[retry]\nqueue_type = \"classic\"",
            "retry.queue_type",
        ),
        (
            "queue = \"q\"\nqueue_arguments = { \"x-queue-type\" = \"quorum\" }",
            "queue_arguments.x-queue-type",
        ),
        (
            "queue = \"q\"\nbindings = [{ exchange = \"\" }]",
            "bindings[0].exchange",
        ),
        (
            "queue = \"q\"\nexchanges = [{ name = \"amq.x\", kind = \"fanout\" }]",
            "exchanges[0].name",
        ),
        ("queue = \"amq.q\"", "queue"),
        ("queue = \"q\"\nurls = []", "urls"),
        ("queue = \"q\"\nack_interval = \"1m\"", "ack_interval"),
    ];
    for (text, field) in cases {
        let err = source(text)
            .err()
            .unwrap_or_else(|| panic!("accepted: {text}"));
        assert!(err.is_fatal());
        assert_eq!(field_of(err), field, "for {text}");
    }
}

#[test]
fn unknown_fields_and_bad_urls_are_refused_without_echoing_secrets() {
    let unknown = toml::from_str::<AmqpSourceConfig>("queue = \"q\"\nprefetsh = 10").unwrap_err();
    assert!(unknown.to_string().contains("prefetsh"), "{unknown}");
    let bad =
        toml::from_str::<AmqpSourceConfig>("urls = [\"amqp//bob:hunter2@host\"]").unwrap_err();
    // The message is ours; toml's `Display` adds an excerpt of the input line on its own.
    assert!(!bad.message().contains("hunter2"), "{}", bad.message());
    assert!(
        bad.message().contains("not a valid amqp"),
        "{}",
        bad.message()
    );
}

#[test]
fn sink_and_dead_letter_configurations_check_their_fields() {
    let ok: AmqpSinkConfig = toml::from_str(
        r#"
        exchange = "orders"
        routing_key = "orders.{key}"
        exchanges = [{ name = "orders", kind = "topic", alternate_exchange = "orders.unrouted" }]
        "#,
    )
    .unwrap();
    assert!(AmqpSink::new(ok).is_ok());
    let bad: AmqpSinkConfig = toml::from_str("routing_key = \"orders.{id}\"").unwrap();
    assert_eq!(field_of(AmqpSink::new(bad).err().unwrap()), "routing_key");
    let dlq: AmqpDeadLetterConfig = toml::from_str("queue = \"\"").unwrap();
    assert_eq!(field_of(AmqpDeadLetters::new(dlq).err().unwrap()), "queue");
    let dlq: AmqpDeadLetterConfig =
        toml::from_str("queue = \"dead\"\nqueue_type = \"quorum\"").unwrap();
    assert_eq!(AmqpDeadLetters::new(dlq).unwrap().queue(), "dead");
}

#[tokio::test]
async fn a_queue_that_dies_with_its_connection_cannot_be_declared_ahead() {
    // Refused before connecting: the URL points nowhere.
    for text in [
        "urls = [\"amqp://u:p@127.0.0.1:1/%2f\"]\ndead_letter_queue = \"d\"",
        "urls = [\"amqp://u:p@127.0.0.1:1/%2f\"]\nqueue = \"mine\"\nexclusive = true",
    ] {
        let e = source(text).unwrap().declare().await.unwrap_err();
        assert!(e.to_string().contains("cannot be declared ahead"), "{e}");
        assert_eq!(field_of(e), "queue");
    }
}
