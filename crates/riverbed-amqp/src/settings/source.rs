//! Checks of the source configuration: the consumed queue, streams, retry and dead letters.

use std::time::Duration;

use lapin::options::QueueDeclareOptions;
use lapin::types::AMQPValue;

use super::parts::{
    bindings, connection, durable_queue, exchanges, short, stream_start, table, type_arg,
};
use super::{ConnectionSettings, QueueSpec, RetrySpec, SourceSettings, StreamStart};
use crate::config::{AmqpSourceConfig, QueueType};
use crate::error::{Result, config};

fn source_queue(c: &AmqpSourceConfig) -> Result<QueueSpec> {
    short("queue", &c.queue)?;
    for reserved in ["x-queue-type", "x-single-active-consumer"] {
        if c.queue_arguments.contains_key(reserved) {
            return Err(config(
                format!("queue_arguments.{reserved}"),
                "has its own field: use `queue_type` / `single_active_consumer`",
            ));
        }
    }
    let mut arguments = table("queue_arguments", &c.queue_arguments)?;
    if let Some(t) = c.queue_type {
        arguments.insert("x-queue-type".into(), type_arg(t));
    }
    if c.single_active_consumer {
        arguments.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
    }
    let server_named = c.queue.is_empty();
    // A server-named queue gets a new name on every reconnect: it only makes sense as a
    // private, transient queue.
    let (durable, exclusive) = if server_named {
        (false, true)
    } else {
        (c.durable, c.exclusive)
    };
    if matches!(c.queue_type, Some(QueueType::Quorum | QueueType::Stream)) {
        let kind = if c.queue_type == Some(QueueType::Stream) {
            "stream"
        } else {
            "quorum queue"
        };
        if server_named {
            return Err(config("queue", format!("a {kind} needs a name")));
        }
        if !durable || exclusive || c.auto_delete {
            return Err(config(
                "queue_type",
                format!("a {kind} must be durable, not exclusive and not auto-delete"),
            ));
        }
    }
    if c.queue.starts_with("amq.") && !c.passive {
        return Err(config(
            "queue",
            "names starting with `amq.` are reserved (set `passive` to use an existing one)",
        ));
    }
    Ok(QueueSpec {
        name: c.queue.clone(),
        options: QueueDeclareOptions {
            passive: c.passive,
            durable,
            exclusive,
            auto_delete: c.auto_delete,
            nowait: false,
        },
        arguments,
    })
}

fn retry(c: &AmqpSourceConfig, is_stream: bool) -> Result<Option<RetrySpec>> {
    let possible = !is_stream && !c.queue.is_empty();
    let enabled = match c.retry.enabled {
        Some(true) if !possible => {
            return Err(config(
                "retry.enabled",
                "broker retry needs a named queue that is not a stream",
            ));
        }
        Some(e) => e,
        None => possible,
    };
    if !enabled {
        return Ok(None);
    }
    // Quorum only: its dead-lettering back to the source queue is at least once. A classic
    // queue's is at most once (a message expiring while the source queue refuses it, or the
    // broker fails, is dropped), while the original is acknowledged as soon as the copy is
    // confirmed: a retry could be lost.
    let queue_type = match c.retry.queue_type {
        Some(QueueType::Classic) => {
            return Err(config(
                "retry.queue_type",
                "\"classic\" is refused: a classic queue dead-letters at most once, and the \
                 original is already acknowledged when the copy waits there, so a retry could \
                 be lost; use \"quorum\" (the default)",
            ));
        }
        None | Some(QueueType::Quorum) => QueueType::Quorum,
        Some(QueueType::Stream) => {
            return Err(config(
                "retry.queue_type",
                "must be classic or quorum: streams do not expire messages",
            ));
        }
    };
    let prefix = c
        .retry
        .queue_prefix
        .clone()
        .unwrap_or_else(|| format!("{}.retry", c.queue));
    // Room for the tier suffix (`.1073741824ms`).
    if prefix.len() > 240 {
        return Err(config("retry.queue_prefix", "is longer than 240 bytes"));
    }
    let hold_limit = c.retry.hold_limit.unwrap_or(Duration::from_secs(30));
    Ok(Some(RetrySpec {
        prefix,
        queue_type,
        hold_limit,
    }))
}

impl TryFrom<AmqpSourceConfig> for SourceSettings {
    type Error = crate::Error;

    fn try_from(c: AmqpSourceConfig) -> Result<Self> {
        let default_name = if c.queue.is_empty() {
            "riverbed source (server-named queue)".to_owned()
        } else {
            format!("riverbed source {}", c.queue)
        };
        let connection = ConnectionSettings {
            reconnect_initial: c.reconnect_initial,
            reconnect_max: c.reconnect_max.max(c.reconnect_initial),
            ..connection(
                c.urls.clone(),
                c.connection_name.clone(),
                c.connect_timeout,
                c.tls.as_ref(),
                default_name,
            )?
        };
        let queue = source_queue(&c)?;
        let is_stream = c.queue_type == Some(QueueType::Stream);
        let prefetch = u16::try_from(c.prefetch)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| config("prefetch", "must be between 1 and 65535"))?;
        let stream = match (&c.stream_offset, is_stream) {
            (Some(_), false) => {
                return Err(config(
                    "stream_offset",
                    "only applies to `queue_type = \"stream\"`",
                ));
            }
            (Some(o), true) => Some(stream_start(o)?),
            (None, true) => Some(StreamStart::Next),
            (None, false) => None,
        };
        short("consumer_tag", &c.consumer_tag)?;
        if c.ack_interval > Duration::from_secs(10) {
            return Err(config("ack_interval", "must be at most 10s"));
        }
        if c.linger > Duration::from_secs(1) {
            return Err(config("linger", "must be at most 1s"));
        }
        // A quorum source's dead letters are replicated like its messages: a classic
        // dead-letter queue lives on one node, and with that node down the source could not
        // declare it, so it could not consume from the queue's surviving replicas either.
        let dlq_type = (c.queue_type == Some(QueueType::Quorum)).then_some(QueueType::Quorum);
        let dead_letter_queue = match (&c.dead_letter_queue, c.queue.is_empty()) {
            (Some(name), _) => {
                short("dead_letter_queue", name)?;
                Some(durable_queue(name.clone(), dlq_type))
            }
            (None, false) => Some(durable_queue(format!("{}.dlq", c.queue), dlq_type)),
            (None, true) => None,
        };
        let mut settings = SourceSettings {
            connection,
            queue,
            exchanges: exchanges(&c.exchanges)?,
            bindings: bindings(&c.bindings)?,
            prefetch,
            consumer_tag: c.consumer_tag.clone(),
            stream,
            ack_interval: c.ack_interval,
            linger: c.linger,
            retry: retry(&c, is_stream)?,
            dead_letter_queue,
            confirm_timeout: c.confirm_timeout,
            created_with: Default::default(),
            partitions: None,
        };
        settings.limit_deliveries(riverbed_core::DEFAULT_MAX_DELIVERIES.get());
        Ok(settings)
    }
}
