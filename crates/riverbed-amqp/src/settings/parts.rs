//! Checks shared by every configuration: connections, names, argument tables, exchanges,
//! bindings, and the sink and dead-letter settings built from them.

use std::collections::BTreeMap;
use std::time::Duration;

use lapin::ExchangeKind;
use lapin::options::{ExchangeDeclareOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

use super::{
    BindingSpec, ConnectionSettings, DeadLetterSettings, ExchangeSpec, QueueSpec, SinkSettings,
    StreamStart,
};
use crate::config::{
    AmqpDeadLetterConfig, AmqpSinkConfig, ArgValue, BindingConfig, ExchangeConfig, ExchangeType,
    QueueType, StreamOffsetConfig,
};
use crate::error::{Result, config};
use crate::routing::RoutingKey;
use crate::url::BrokerUrl;
use riverbed_core::tls::TlsConfig;

use super::TlsSettings;

pub(super) fn connection(
    urls: Vec<BrokerUrl>,
    name: Option<String>,
    connect_timeout: Duration,
    tls: Option<&TlsConfig>,
    default_name: String,
) -> Result<ConnectionSettings> {
    if urls.is_empty() {
        return Err(config("urls", "needs at least one broker url"));
    }
    let tls = match tls {
        None => TlsSettings::default(),
        Some(_) if !urls.iter().any(BrokerUrl::is_tls) => {
            return Err(config("tls", "applies to amqps:// urls only"));
        }
        Some(t) => TlsSettings::from_files(t.read()?),
    };
    if connect_timeout.is_zero() {
        return Err(config("connect_timeout", "must be longer than zero"));
    }
    Ok(ConnectionSettings {
        urls: urls.into(),
        name: name.unwrap_or(default_name),
        connect_timeout,
        tls,
        reconnect_initial: Duration::from_millis(100),
        reconnect_max: Duration::from_secs(10),
    })
}

pub(crate) fn short(field: &str, s: &str) -> Result<ShortString> {
    ShortString::try_new(s).map_err(|_| config(field, "is longer than 255 bytes"))
}

pub(super) fn table(field: &str, args: &BTreeMap<String, ArgValue>) -> Result<FieldTable> {
    let mut t = FieldTable::default();
    for (k, v) in args {
        let value = match v {
            ArgValue::Bool(b) => AMQPValue::Boolean(*b),
            ArgValue::Int(i) => AMQPValue::LongLongInt(*i),
            ArgValue::Float(f) => AMQPValue::Double(*f),
            ArgValue::Str(s) => AMQPValue::LongString(LongString::from(s.as_str())),
        };
        t.insert(short(&format!("{field}.{k}"), k)?, value);
    }
    Ok(t)
}

pub(super) fn exchanges(list: &[ExchangeConfig]) -> Result<Vec<ExchangeSpec>> {
    list.iter()
        .enumerate()
        .map(|(i, x)| {
            let field = format!("exchanges[{i}]");
            if x.name.is_empty() || x.name.starts_with("amq.") {
                return Err(config(
                    format!("{field}.name"),
                    "must be a non-empty name outside the reserved `amq.` prefix",
                ));
            }
            short(&format!("{field}.name"), &x.name)?;
            let mut arguments = table(&format!("{field}.arguments"), &x.arguments)?;
            if let Some(ae) = &x.alternate_exchange {
                arguments.insert(
                    "alternate-exchange".into(),
                    AMQPValue::LongString(ae.as_str().into()),
                );
            }
            Ok(ExchangeSpec {
                name: x.name.clone(),
                kind: match x.kind {
                    ExchangeType::Fanout => ExchangeKind::Fanout,
                    ExchangeType::Direct => ExchangeKind::Direct,
                    ExchangeType::Topic => ExchangeKind::Topic,
                    ExchangeType::Headers => ExchangeKind::Headers,
                },
                options: ExchangeDeclareOptions {
                    durable: x.durable,
                    auto_delete: x.auto_delete,
                    ..Default::default()
                },
                arguments,
            })
        })
        .collect()
}

pub(super) fn bindings(list: &[BindingConfig]) -> Result<Vec<BindingSpec>> {
    list.iter()
        .enumerate()
        .map(|(i, b)| {
            let field = format!("bindings[{i}]");
            if b.exchange.is_empty() {
                return Err(config(
                    format!("{field}.exchange"),
                    "is empty: the default exchange cannot be bound",
                ));
            }
            short(&format!("{field}.routing_key"), &b.routing_key)?;
            Ok(BindingSpec {
                exchange: b.exchange.clone(),
                routing_key: b.routing_key.clone(),
                arguments: table(&format!("{field}.arguments"), &b.arguments)?,
            })
        })
        .collect()
}

/// A durable queue of `queue_type` (classic when absent), as used for dead letters and retries.
pub(crate) fn durable_queue(name: String, queue_type: Option<QueueType>) -> QueueSpec {
    let mut arguments = FieldTable::default();
    if let Some(t) = queue_type {
        arguments.insert("x-queue-type".into(), type_arg(t));
    }
    QueueSpec {
        name,
        options: QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        arguments,
    }
}

pub(super) fn type_arg(t: QueueType) -> AMQPValue {
    let name = match t {
        QueueType::Classic => "classic",
        QueueType::Quorum => "quorum",
        QueueType::Stream => "stream",
    };
    AMQPValue::LongString(name.into())
}

pub(super) fn stream_start(c: &StreamOffsetConfig) -> Result<StreamStart> {
    Ok(match c {
        StreamOffsetConfig::Offset(n) => StreamStart::Offset(*n),
        StreamOffsetConfig::Named(s) => match s.as_str() {
            "first" => StreamStart::First,
            "last" => StreamStart::Last,
            "next" => StreamStart::Next,
            other => {
                StreamStart::Timestamp(humantime::parse_rfc3339_weak(other).map_err(|_| {
                    config(
                        "stream_offset",
                        format!(
                            "`{other}` is not first, last, next, an offset or an RFC 3339 time"
                        ),
                    )
                })?)
            }
        },
    })
}

impl TryFrom<AmqpSinkConfig> for SinkSettings {
    type Error = crate::Error;

    fn try_from(c: AmqpSinkConfig) -> Result<Self> {
        let name = format!("riverbed sink {}", c.exchange);
        let routing_key: RoutingKey = c
            .routing_key
            .parse()
            .map_err(|reason: String| config("routing_key", reason))?;
        short("exchange", &c.exchange)?;
        Ok(SinkSettings {
            connection: connection(
                c.urls,
                c.connection_name,
                c.connect_timeout,
                c.tls.as_ref(),
                name,
            )?,
            exchange: c.exchange,
            routing_key,
            exchanges: exchanges(&c.exchanges)?,
            mandatory: c.mandatory,
            persistent: c.persistent,
            confirm_timeout: c.confirm_timeout,
        })
    }
}

impl TryFrom<AmqpDeadLetterConfig> for DeadLetterSettings {
    type Error = crate::Error;

    fn try_from(c: AmqpDeadLetterConfig) -> Result<Self> {
        if c.queue.is_empty() {
            return Err(config("queue", "needs a name"));
        }
        short("queue", &c.queue)?;
        if c.queue_type == Some(QueueType::Stream) {
            return Err(config("queue_type", "must be classic or quorum"));
        }
        let name = format!("riverbed dead letters {}", c.queue);
        Ok(DeadLetterSettings {
            connection: connection(
                c.urls,
                c.connection_name,
                c.connect_timeout,
                c.tls.as_ref(),
                name,
            )?,
            queue: durable_queue(c.queue, c.queue_type),
            confirm_timeout: c.confirm_timeout,
        })
    }
}
