//! A dead letter read back from its queue: the facts Riverbed (or the broker) wrote on it, and
//! the copy a redrive sends.

use bytes::Bytes;
use lapin::BasicProperties;
use lapin::message::Delivery;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use riverbed_core::{FIRST_FAILURE_HEADER, Headers};

use crate::death::{self, DEATH_HEADER};
use crate::headers::{self, ATTEMPT_HEADER};

/// The header a redriven copy carries: how many times it was redriven so far.
pub const REDRIVEN_HEADER: &str = "x-riverbed-redriven";
/// The header a redriven copy carries: the redrive run that sent it, so that one run never
/// redrives the same message twice when its copy is dead-lettered again meanwhile.
pub const REDRIVE_RUN_HEADER: &str = "x-riverbed-redrive-run";

/// The dead-letter facts Riverbed writes (see `riverbed_core::DeadLetter::headers`), and the
/// headers the broker adds when it dead-letters by itself. A redriven copy carries none of
/// them: it starts again at attempt 1.
const LETTER_HEADERS: &[&str] = &[
    "x-riverbed-reason",
    "x-riverbed-error",
    "x-riverbed-attempts",
    "x-riverbed-stage",
    FIRST_FAILURE_HEADER,
    "x-riverbed-last-failure-ms",
    "x-riverbed-original-exchange",
    "x-riverbed-original-subject",
    ATTEMPT_HEADER,
    REDRIVE_RUN_HEADER,
    DEATH_HEADER,
    "x-delivery-count",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-last-death-exchange",
    "x-last-death-queue",
    "x-last-death-reason",
];

/// One dead letter taken from a dead-letter queue (not yet acknowledged).
#[derive(Debug, Clone)]
pub struct QueuedLetter {
    /// Its delivery tag on the browsing channel.
    pub tag: u64,
    /// The message id, if the message had one.
    pub message_id: Option<String>,
    /// Why it was dead-lettered (`x-riverbed-reason`; for a letter the broker dead-lettered
    /// by itself, its reason such as `delivery_limit`).
    pub reason: String,
    /// The last error text, when Riverbed wrote it.
    pub error: Option<String>,
    /// How many attempts were made, when Riverbed wrote it.
    pub attempts: Option<u32>,
    /// The sink or stage that refused it.
    pub stage: Option<String>,
    /// When the first attempt failed (ms since the Unix epoch).
    pub first_failure_ms: Option<i64>,
    /// When it was dead-lettered (the last failure; ms since the Unix epoch).
    pub last_failure_ms: Option<i64>,
    /// The exchange it was first published to (`None`: the default exchange).
    pub original_exchange: Option<String>,
    /// The routing key it was first published with.
    pub original_routing_key: Option<String>,
    /// The queue the broker dead-lettered it from (letters the broker wrote by itself).
    pub original_queue: Option<String>,
    /// The redrive run that sent this copy, if it was redriven before.
    pub redrive_run: Option<String>,
    /// Every header, as Riverbed reads headers.
    pub headers: Headers,
    /// The payload.
    pub payload: Bytes,
    properties: BasicProperties,
}

impl QueuedLetter {
    /// Reads the facts off a delivery from a dead-letter queue.
    pub(crate) fn from_delivery(d: Delivery) -> Self {
        let empty = FieldTable::default();
        let table = d.properties.headers().as_ref().unwrap_or(&empty);
        let text = |name: &str| match table.inner().get(name) {
            Some(AMQPValue::LongString(s)) => Some(String::from_utf8_lossy(s.as_bytes()).into()),
            Some(AMQPValue::ShortString(s)) => Some(s.to_string()),
            _ => None,
        };
        let last_death = table
            .inner()
            .get(DEATH_HEADER)
            .and_then(|v| death::parse(v).into_iter().next());
        let by_riverbed = text("x-riverbed-reason");
        let mut letter = QueuedLetter {
            tag: d.delivery_tag,
            message_id: d.properties.message_id().as_ref().map(|m| m.to_string()),
            reason: by_riverbed
                .clone()
                .or_else(|| last_death.as_ref().map(|x| x.reason.clone()))
                .unwrap_or_else(|| "unknown".into()),
            error: text("x-riverbed-error"),
            attempts: headers::int(table, "x-riverbed-attempts").and_then(|a| a.try_into().ok()),
            stage: text("x-riverbed-stage"),
            first_failure_ms: headers::int(table, FIRST_FAILURE_HEADER),
            last_failure_ms: headers::int(table, "x-riverbed-last-failure-ms"),
            original_exchange: text("x-riverbed-original-exchange"),
            original_routing_key: text("x-riverbed-original-subject"),
            original_queue: None,
            redrive_run: text(REDRIVE_RUN_HEADER),
            headers: headers::from_table(table),
            payload: Bytes::from(d.data),
            properties: d.properties,
        };
        if by_riverbed.is_none()
            && let Some(x) = last_death
        {
            letter.error = Some(format!(
                "dead-lettered by the broker from queue `{}` ({})",
                x.queue, x.reason
            ));
            letter.last_failure_ms = x.time.and_then(|t| i64::try_from(t * 1000).ok());
            letter.original_exchange = (!x.exchange.is_empty()).then_some(x.exchange);
            letter.original_routing_key = x.routing_key;
            letter.original_queue = Some(x.queue);
        }
        letter
    }

    /// The properties and headers of the copy a redrive sends: everything the message had
    /// (content type, message id, timestamp, user headers...) but the dead-letter facts and
    /// the broker's dead-letter history, so that it starts again at attempt 1; plus
    /// `x-riverbed-redriven` (how many times it was redriven) and `x-riverbed-redrive-run`.
    pub(crate) fn redrive_properties(&self, run: &str) -> BasicProperties {
        let mut table = FieldTable::default();
        let mut redriven = 0;
        if let Some(h) = self.properties.headers() {
            for (k, v) in h.inner() {
                if k.as_str() == REDRIVEN_HEADER {
                    redriven = headers::int_value(v).unwrap_or(0);
                } else if !LETTER_HEADERS.contains(&k.as_str()) {
                    table.insert(k.clone(), v.clone());
                }
            }
        }
        table.insert(
            ShortString::from(REDRIVEN_HEADER),
            AMQPValue::LongLongInt(redriven.saturating_add(1)),
        );
        table.insert(
            ShortString::from(REDRIVE_RUN_HEADER),
            AMQPValue::LongString(LongString::from(run)),
        );
        self.properties
            .clone()
            .with_headers(table)
            .with_delivery_mode(2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::death::tests::{entry, x_death};

    fn delivery(headers: FieldTable) -> Delivery {
        let mut d = Delivery::mock(3, "".into(), "orders.dlq".into(), false, b"{}".to_vec());
        d.properties = BasicProperties::default()
            .with_message_id("m1".into())
            .with_content_type("application/json".into())
            .with_headers(headers);
        d
    }

    #[test]
    fn reads_riverbed_facts_and_strips_them_from_the_copy() {
        let mut h = FieldTable::default();
        let s = |v: &str| AMQPValue::LongString(v.into());
        h.insert("x-riverbed-reason".into(), s("malformed_payload"));
        h.insert("x-riverbed-error".into(), s("expected value"));
        h.insert("x-riverbed-attempts".into(), AMQPValue::LongLongInt(3));
        h.insert(
            "x-riverbed-last-failure-ms".into(),
            AMQPValue::LongLongInt(5),
        );
        h.insert("x-riverbed-original-exchange".into(), s("orders"));
        h.insert("x-riverbed-original-subject".into(), s("order.created"));
        h.insert(ATTEMPT_HEADER.into(), AMQPValue::LongLongInt(3));
        h.insert("tenant".into(), s("acme"));
        h.insert(REDRIVEN_HEADER.into(), AMQPValue::LongLongInt(1));
        let l = QueuedLetter::from_delivery(delivery(h));
        assert_eq!(l.reason, "malformed_payload");
        assert_eq!(l.error.as_deref(), Some("expected value"));
        assert_eq!(l.attempts, Some(3));
        assert_eq!(l.last_failure_ms, Some(5));
        assert_eq!(l.original_exchange.as_deref(), Some("orders"));
        assert_eq!(l.original_routing_key.as_deref(), Some("order.created"));
        assert_eq!(l.message_id.as_deref(), Some("m1"));
        let p = l.redrive_properties("run-1");
        let t = p.headers().as_ref().unwrap();
        assert!(t.contains_key("tenant"));
        assert!(!t.contains_key("x-riverbed-reason") && !t.contains_key(ATTEMPT_HEADER));
        assert_eq!(headers::int(t, REDRIVEN_HEADER), Some(2));
        assert_eq!(t.inner().get(REDRIVE_RUN_HEADER), Some(&s("run-1")));
        assert_eq!(p.message_id().as_ref().map(|m| m.as_str()), Some("m1"));
        assert_eq!(p.delivery_mode(), &Some(2));
    }

    #[test]
    fn a_letter_the_broker_wrote_names_its_queue_and_reason() {
        let mut h = FieldTable::default();
        h.insert(
            DEATH_HEADER.into(),
            x_death(vec![entry("orders", "delivery_limit", 1)]),
        );
        let l = QueuedLetter::from_delivery(delivery(h));
        assert_eq!(l.reason, "delivery_limit");
        assert_eq!(l.original_queue.as_deref(), Some("orders"));
        assert_eq!(l.original_routing_key.as_deref(), Some("orders"));
        assert_eq!(l.last_failure_ms, Some(1_700_000_000_000));
        let p = l.redrive_properties("r");
        assert!(!p.headers().as_ref().unwrap().contains_key(DEATH_HEADER));
    }
}
