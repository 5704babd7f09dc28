//! Every metric the workspace emits, with its kind, unit and description, registered once
//! through `metrics::describe_*` so an exporter prints `# HELP` and the unit for each, and the
//! histogram buckets suited to each histogram.

use metrics::Unit;

/// What a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// A distribution, exported as a Prometheus histogram.
    Histogram,
}

/// One metric: its name, kind, unit and the one-line help an operator reads.
#[derive(Debug, Clone, Copy)]
pub struct MetricInfo {
    /// The name (`riverbed_*`; counters end in `_total`, durations in `_seconds`).
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: MetricKind,
    /// The unit.
    pub unit: Unit,
    /// What it counts or measures.
    pub help: &'static str,
}

/// Histogram buckets for latencies, in seconds: 1 ms to 30 s.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Histogram buckets for batch sizes, in messages: 1 to 10,000.
pub const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
];

/// The buckets of histogram `info`: batch sizes for counts, latencies for seconds.
pub fn buckets(info: &MetricInfo) -> &'static [f64] {
    match info.unit {
        Unit::Count => BATCH_BUCKETS,
        _ => SECONDS_BUCKETS,
    }
}

use MetricKind::{Counter as C, Gauge as G, Histogram as H};

const fn m(name: &'static str, kind: MetricKind, unit: Unit, help: &'static str) -> MetricInfo {
    MetricInfo {
        name,
        kind,
        unit,
        help,
    }
}

/// Every metric of the workspace.
#[rustfmt::skip]
pub const METRICS: &[MetricInfo] = &[
    m("riverbed_build_info", G, Unit::Count, "Always 1; the label `version` is the running release."),
    m("riverbed_messages_received_total", C, Unit::Count, "Deliveries taken from the source."),
    m("riverbed_messages_acked_total", C, Unit::Count, "Deliveries acknowledged after every sink committed them (filtered ones included)."),
    m("riverbed_messages_filtered_total", C, Unit::Count, "Deliveries acknowledged without reaching a sink (a processor dropped them)."),
    m("riverbed_messages_in_flight", G, Unit::Count, "Deliveries received and not yet settled (bounded by max_in_flight)."),
    m("riverbed_source_backlog_messages", G, Unit::Count, "Messages waiting at the source, as its broker tells (a queue's ready messages, a JetStream consumer's pending), by queue."),
    m("riverbed_source_connected", G, Unit::Count, "1 while the source is connected and consuming, else 0."),
    m("riverbed_config_generation", G, Unit::Count, "The running pipeline's generation: 1 at start, one more per configuration swapped in."),
    m("riverbed_reconfigurations_total", C, Unit::Count, "Configuration changes asked for, by outcome (applied, invalid, needs_restart, unavailable, stopping)."),
    m("riverbed_dead_letters_total", C, Unit::Count, "Deliveries written to the dead-letter destination, by reason and stage."),
    m("riverbed_dead_letter_write_failures_total", C, Unit::Count, "Failed attempts to store dead letters (each is retried)."),
    m("riverbed_dead_letter_storms_total", C, Unit::Count, "Times the storm guard stopped consuming because most messages failed."),
    m("riverbed_pipeline_metrics_failures_total", C, Unit::Count, "Pipeline metrics messages (task `pipeline_metrics`) that were not confirmed, by task."),
    m("riverbed_dead_letter_storm", G, Unit::Count, "1 while the dead-letter storm guard holds the intake."),
    m("riverbed_retries_total", C, Unit::Count, "In-process retry attempts, by sink."),
    m("riverbed_broker_retries_total", C, Unit::Count, "Deliveries handed back to the broker for a delayed retry."),
    m("riverbed_end_to_end_seconds", H, Unit::Seconds, "Time from receiving a delivery to acknowledging it (every sink committed it)."),
    m("riverbed_sink_write_seconds", H, Unit::Seconds, "Time to write one batch, by sink."),
    m("riverbed_sink_batch_size", H, Unit::Count, "Messages per batch written, by sink."),
    m("riverbed_sink_unavailable", G, Unit::Count, "1 while a sink's destination cannot be reached (the partition waits)."),
    m("riverbed_sink_unavailable_waits_total", C, Unit::Count, "Waits of a message on an unreachable destination, by sink (no attempt used up)."),
    m("riverbed_sink_outages_total", C, Unit::Count, "Times a sink's destination became unreachable."),
    m("riverbed_sink_unavailable_seconds_total", C, Unit::Seconds, "Time sinks' destinations were unreachable, in whole seconds."),
    m("riverbed_breaker_state", G, Unit::Count, "Circuit breaker state by sink and endpoint: 0 closed, 1 half-open, 2 open."),
    m("riverbed_breaker_transitions_total", C, Unit::Count, "Circuit breaker transitions, by sink, endpoint, from and to."),
    m("riverbed_breaker_rejections_total", C, Unit::Count, "Calls refused because a circuit breaker was open."),
    m("riverbed_leader", G, Unit::Count, "1 while this instance holds the singleton lease, else 0."),
    m("riverbed_leader_fencing_token", G, Unit::Count, "The fencing token of the lease this instance holds."),
    m("riverbed_amqp_ack_frames_total", C, Unit::Count, "basic.ack frames sent (each may acknowledge many deliveries)."),
    m("riverbed_amqp_nack_frames_total", C, Unit::Count, "basic.nack frames sent (requeues, failed retries)."),
    m("riverbed_amqp_connect_failures_total", C, Unit::Count, "Failed attempts to connect to RabbitMQ, by role."),
    m("riverbed_amqp_reconnects_total", C, Unit::Count, "Reconnections to RabbitMQ after a lost connection, channel or consumer, by role."),
    m("riverbed_amqp_retries_published_total", C, Unit::Count, "Messages published to a broker retry queue."),
    m("riverbed_amqp_retry_failures_total", C, Unit::Count, "Broker retries not taken on one attempt (held and tried again), by stage."),
    m("riverbed_amqp_stale_settlements_total", C, Unit::Count, "Settlements dropped because their channel had gone (the broker redelivers)."),
    m("riverbed_amqp_unroutable_total", C, Unit::Count, "Published messages returned by RabbitMQ as unroutable."),
    m("riverbed_nats_acked_total", C, Unit::Count, "JetStream deliveries acknowledged."),
    m("riverbed_nats_naked_total", C, Unit::Count, "JetStream deliveries given back (NAK)."),
    m("riverbed_nats_progress_acks_total", C, Unit::Count, "In-progress acknowledgements sent for slow deliveries."),
    m("riverbed_nats_pull_renewals_total", C, Unit::Count, "Times the JetStream pull was renewed."),
    m("riverbed_nats_reconnects_total", C, Unit::Count, "Reconnections to NATS."),
    m("riverbed_nats_publish_duplicates_total", C, Unit::Count, "Publishes JetStream recognised as duplicates (Nats-Msg-Id)."),
    m("riverbed_embedded_commits_total", C, Unit::Count, "Group commits of the embedded log."),
    m("riverbed_http_request_seconds", H, Unit::Seconds, "HTTP sink request latency, by sink and status."),
    m("riverbed_http_retries_total", C, Unit::Count, "HTTP sink requests retried."),
    m("riverbed_sql_rows_written_total", C, Unit::Count, "Rows written by SQL sinks."),
    m("riverbed_sql_rows_skipped_total", C, Unit::Count, "Rows SQL sinks skipped (already written, older version)."),
    m("riverbed_sql_inbox_duplicates_total", C, Unit::Count, "Messages the PostgreSQL inbox had already processed."),
    m("riverbed_outbox_claimed_total", C, Unit::Count, "Outbox rows claimed by the relay."),
    m("riverbed_outbox_marked_total", C, Unit::Count, "Outbox rows marked as published."),
    m("riverbed_outbox_removed_total", C, Unit::Count, "Outbox rows removed after publishing."),
    m("riverbed_outbox_claim_failures_total", C, Unit::Count, "Failed attempts to claim outbox rows."),
    m("riverbed_outbox_mark_failures_total", C, Unit::Count, "Failed attempts to mark outbox rows."),
    m("riverbed_redis_increments_total", C, Unit::Count, "Hash counter increments applied in Redis."),
    m("riverbed_redis_duplicates_skipped_total", C, Unit::Count, "Redis writes skipped as duplicates."),
    m("riverbed_redis_latest_applied_total", C, Unit::Count, "Latest-state writes applied in Redis."),
    m("riverbed_redis_stale_skipped_total", C, Unit::Count, "Latest-state writes skipped as older than the stored version."),
    m("riverbed_redis_totals_null_groups_total", C, Unit::Count, "Totals rows without a group, left out of Redis."),
    m("riverbed_redis_totals_stale_writes_total", C, Unit::Count, "Totals snapshots not written because a newer one was stored."),
    m("riverbed_redis_window_flushes_total", C, Unit::Count, "Window counter flushes written to Redis."),
    m("riverbed_redis_window_flush_failures_total", C, Unit::Count, "Window counter flushes that failed (retried)."),
    m("riverbed_redis_window_restores_total", C, Unit::Count, "Window counters restored at start."),
    m("riverbed_redis_window_flush_lateness_seconds", H, Unit::Seconds, "Time from a window boundary to its flush answered."),
    m("riverbed_redis_window_flush_lateness_last_seconds", G, Unit::Seconds, "Lateness of the last window flush."),
    m("riverbed_feed_producer_up", G, Unit::Count, "1 while a feed producer is up (alive and recovered), by producer."),
    m("riverbed_feed_producer_down_total", C, Unit::Count, "Times a feed producer went down, by producer and reason."),
    m("riverbed_feed_recovery_requests_total", C, Unit::Count, "Feed recovery requests sent."),
    m("riverbed_feed_recovery_failures_total", C, Unit::Count, "Feed recovery requests that failed, by producer."),
];

/// Describes every metric of [`METRICS`] to the installed recorder (HELP and unit), and sets
/// `riverbed_build_info{version}` to 1. Call once, after installing the recorder.
pub fn describe_metrics(version: &'static str) {
    for info in METRICS {
        match info.kind {
            MetricKind::Counter => metrics::describe_counter!(info.name, info.unit, info.help),
            MetricKind::Gauge => metrics::describe_gauge!(info.name, info.unit, info.help),
            MetricKind::Histogram => metrics::describe_histogram!(info.name, info.unit, info.help),
        }
    }
    metrics::gauge!("riverbed_build_info", "version" => version).set(1.0);
}

#[cfg(test)]
#[path = "metrics_catalog_tests.rs"]
mod tests;
