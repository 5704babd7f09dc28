//! Parse, don't validate: the raw configuration becomes checked settings in one place.

use std::time::{Duration, SystemTime};

use async_nats::jetstream::consumer::DeliverPolicy;

use crate::config::{DeliverConfig, NatsDeadLetterConfig, NatsSinkConfig, NatsSourceConfig};
use crate::error::{Result, config};
use crate::server::ServerUrl;
use crate::subject::SubjectTemplate;

/// The default `max_ack_pending`: the pipeline's default `max_in_flight`.
pub(crate) const DEFAULT_MAX_ACK_PENDING: u32 = 4096;

/// How to reach the servers.
#[derive(Debug, Clone)]
pub(crate) struct Connection {
    pub servers: Vec<ServerUrl>,
    pub name: Option<String>,
    pub timeout: Duration,
}

impl Connection {
    fn new(servers: Vec<ServerUrl>, name: Option<String>, timeout: Duration) -> Result<Self> {
        if servers.is_empty() {
            return Err(config("servers", "needs at least one url"));
        }
        if timeout.is_zero() {
            return Err(config("connect_timeout", "must be longer than 0s"));
        }
        Ok(Connection {
            servers,
            name,
            timeout,
        })
    }
}

/// Where dead letters go.
#[derive(Debug, Clone)]
pub(crate) struct DeadLetterTarget {
    pub subject: String,
    /// Made sure to exist and capture `subject`: created with `stream_subject` if missing,
    /// given `subject` as one more subject if it does not capture it yet.
    pub stream: Option<String>,
    /// What a new `stream` captures: `subject`, or for the default stream and subject, every
    /// durable's default subject (`riverbed.dlq.<stream>.>`), so that the durables of one
    /// stream share its default dead-letter stream.
    pub stream_subject: String,
    pub publish_timeout: Duration,
}

/// The checked source configuration.
#[derive(Debug, Clone)]
pub(crate) struct SourceSettings {
    pub connection: Connection,
    pub stream: String,
    pub stream_subjects: Vec<String>,
    pub durable: String,
    pub filter_subject: String,
    pub deliver: DeliverPolicy,
    pub ack_wait: Duration,
    pub max_ack_pending: u32,
    /// The configuration named `max_ack_pending` (a default from the pipeline does not apply).
    pub max_ack_pending_set: bool,
    pub max_deliver: i64,
    pub batch: usize,
    pub expires: Duration,
    pub idle_heartbeat: Duration,
    pub reconnect_initial: Duration,
    pub reconnect_max: Duration,
    pub dead_letters: DeadLetterTarget,
}

/// A stream or consumer name: no spaces, dots or wildcards.
fn name(field: &str, v: &str) -> Result<String> {
    if v.is_empty() {
        return Err(config(field, "must not be empty"));
    }
    if v.contains(['.', '*', '>', ' ', '\t', '/', '\\']) {
        return Err(config(
            field,
            format!("`{v}` may not contain `.`, `*`, `>`, `/`, `\\` or whitespace"),
        ));
    }
    Ok(v.to_owned())
}

/// A subject to publish to or filter by: non-empty tokens, no whitespace.
fn subject(field: &str, v: &str) -> Result<String> {
    if v.is_empty() || v.contains(char::is_whitespace) || v.split('.').any(str::is_empty) {
        return Err(config(
            field,
            format!("`{v}` is not a subject (dot-separated tokens, no whitespace)"),
        ));
    }
    Ok(v.to_owned())
}

fn deliver(d: Option<&DeliverConfig>) -> Result<DeliverPolicy> {
    Ok(match d {
        None => DeliverPolicy::All,
        Some(DeliverConfig::Sequence(0)) => {
            return Err(config("deliver", "stream sequences start at 1"));
        }
        Some(DeliverConfig::Sequence(s)) => DeliverPolicy::ByStartSequence { start_sequence: *s },
        Some(DeliverConfig::Named(n)) => match n.as_str() {
            "all" => DeliverPolicy::All,
            "new" => DeliverPolicy::New,
            time => {
                let t = humantime::parse_rfc3339_weak(time).map_err(|_| {
                    config(
                        "deliver",
                        format!(
                            "`{time}` is not `all`, `new`, a sequence or an RFC 3339 time \
                             such as \"2024-05-01T00:00:00Z\""
                        ),
                    )
                })?;
                DeliverPolicy::ByStartTime {
                    start_time: offset_date_time(t),
                }
            }
        },
    })
}

/// `t` as the client's date type.
pub(crate) fn offset_date_time(t: SystemTime) -> time::OffsetDateTime {
    time::OffsetDateTime::from(t)
}

impl TryFrom<NatsSourceConfig> for SourceSettings {
    type Error = crate::Error;

    fn try_from(c: NatsSourceConfig) -> Result<Self> {
        let connection = Connection::new(c.servers, c.connection_name, c.connect_timeout)?;
        let stream = name("stream", &c.stream)?;
        let durable = name("durable", &c.durable)?;
        for s in &c.stream_subjects {
            if s.is_empty() || s.contains(char::is_whitespace) {
                return Err(config("stream_subjects", format!("`{s}` is not a subject")));
            }
        }
        let filter_subject = match &c.filter_subject {
            None => String::new(),
            Some(f) if f.contains(',') => {
                return Err(config(
                    "filter_subject",
                    "takes one subject: several filter subjects need nats-server 2.10",
                ));
            }
            Some(f) => subject("filter_subject", f)?,
        };
        if c.ack_wait < Duration::from_secs(1) {
            return Err(config("ack_wait", "must be at least 1s"));
        }
        if c.batch == 0 {
            return Err(config("batch", "must be at least 1"));
        }
        if c.expires < Duration::from_secs(1) {
            return Err(config("expires", "must be at least 1s"));
        }
        if c.idle_heartbeat.is_zero() || c.idle_heartbeat > c.expires / 2 {
            return Err(config(
                "idle_heartbeat",
                "must be longer than 0s and at most half of `expires`",
            ));
        }
        let max_ack_pending = c.max_ack_pending.unwrap_or(DEFAULT_MAX_ACK_PENDING);
        if max_ack_pending == 0 {
            return Err(config("max_ack_pending", "must be at least 1"));
        }
        let max_deliver = match c.max_deliver {
            None => -1,
            Some(0) => return Err(config("max_deliver", "must be at least 1")),
            Some(n) => i64::from(n),
        };
        let dl_subject = match &c.dead_letter_subject {
            Some(s) => subject("dead_letter_subject", s)?,
            None => format!("riverbed.dlq.{stream}.{durable}"),
        };
        let dl_stream = match c.dead_letter_stream.as_deref() {
            Some("") => None,
            Some(s) => Some(name("dead_letter_stream", s)?),
            None => Some(format!("{stream}_dlq")),
        };
        let stream_subject = match (&c.dead_letter_subject, &c.dead_letter_stream) {
            (None, None) => format!("riverbed.dlq.{stream}.>"),
            _ => dl_subject.clone(),
        };
        Ok(SourceSettings {
            connection,
            deliver: deliver(c.deliver.as_ref())?,
            stream,
            stream_subjects: c.stream_subjects,
            durable,
            filter_subject,
            ack_wait: c.ack_wait,
            max_ack_pending,
            max_ack_pending_set: c.max_ack_pending.is_some(),
            max_deliver,
            batch: c.batch,
            expires: c.expires,
            idle_heartbeat: c.idle_heartbeat,
            reconnect_initial: c.reconnect_initial,
            reconnect_max: c.reconnect_max.max(c.reconnect_initial),
            dead_letters: DeadLetterTarget {
                subject: dl_subject,
                stream: dl_stream,
                stream_subject,
                publish_timeout: c.publish_timeout,
            },
        })
    }
}

/// The checked sink configuration.
#[derive(Debug, Clone)]
pub(crate) struct SinkSettings {
    pub connection: Connection,
    pub subject: SubjectTemplate,
    pub publish_timeout: Duration,
}

impl TryFrom<NatsSinkConfig> for SinkSettings {
    type Error = crate::Error;

    fn try_from(c: NatsSinkConfig) -> Result<Self> {
        Ok(SinkSettings {
            connection: Connection::new(c.servers, c.connection_name, c.connect_timeout)?,
            subject: c.subject.parse().map_err(|e| config("subject", e))?,
            publish_timeout: c.publish_timeout,
        })
    }
}

/// The checked dead-letter configuration.
#[derive(Debug, Clone)]
pub(crate) struct DeadLetterSettings {
    pub connection: Connection,
    pub target: DeadLetterTarget,
}

impl TryFrom<NatsDeadLetterConfig> for DeadLetterSettings {
    type Error = crate::Error;

    fn try_from(c: NatsDeadLetterConfig) -> Result<Self> {
        let subject = subject("subject", &c.subject)?;
        Ok(DeadLetterSettings {
            connection: Connection::new(c.servers, c.connection_name, c.connect_timeout)?,
            target: DeadLetterTarget {
                stream_subject: subject.clone(),
                subject,
                stream: c.stream.as_deref().map(|s| name("stream", s)).transpose()?,
                publish_timeout: c.publish_timeout,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(extra: &str) -> Result<SourceSettings> {
        let text = format!("stream = \"ORDERS\"\ndurable = \"riverbed\"\n{extra}");
        SourceSettings::try_from(toml::from_str::<NatsSourceConfig>(&text).unwrap())
    }

    #[test]
    fn deliver_policies_parse() {
        assert_eq!(source("").unwrap().deliver, DeliverPolicy::All);
        assert_eq!(
            source("deliver = \"new\"").unwrap().deliver,
            DeliverPolicy::New
        );
        assert_eq!(
            source("deliver = 42").unwrap().deliver,
            DeliverPolicy::ByStartSequence { start_sequence: 42 }
        );
        let t = source("deliver = \"2024-05-01T00:00:00Z\"")
            .unwrap()
            .deliver;
        let DeliverPolicy::ByStartTime { start_time } = t else {
            panic!("{t:?}")
        };
        assert_eq!(start_time.unix_timestamp(), 1_714_521_600);
        let e = source("deliver = \"yesterday\"").unwrap_err().to_string();
        assert!(e.contains("`deliver`"), "{e}");
    }

    #[test]
    fn refuses_what_the_server_would() {
        for (extra, field) in [
            ("filter_subject = \"a.*,b.*\"", "filter_subject"),
            ("idle_heartbeat = \"20s\"", "idle_heartbeat"),
            ("max_ack_pending = 0", "max_ack_pending"),
            ("batch = 0", "batch"),
            ("deliver = 0", "deliver"),
            ("dead_letter_subject = \"a..b\"", "dead_letter_subject"),
        ] {
            let e = source(extra).unwrap_err().to_string();
            assert!(e.contains(&format!("`{field}`")), "{extra}: {e}");
        }
        let e = SourceSettings::try_from(
            toml::from_str::<NatsSourceConfig>("stream = \"a.b\"\ndurable = \"d\"").unwrap(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("`stream`"), "{e}");
    }

    #[test]
    fn defaults_follow_the_pipeline() {
        let s = source("").unwrap();
        assert_eq!(s.max_ack_pending, DEFAULT_MAX_ACK_PENDING);
        assert_eq!(
            s.max_deliver, -1,
            "the pipeline dead-letters, not the server"
        );
        assert_eq!(s.dead_letters.subject, "riverbed.dlq.ORDERS.riverbed");
        assert_eq!(s.dead_letters.stream.as_deref(), Some("ORDERS_dlq"));
    }
}
