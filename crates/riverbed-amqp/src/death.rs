//! The broker's dead-letter history (`x-death`): summarised into a header, and counted into a
//! message's attempt when it records deliveries from the consumed queue.

use lapin::types::AMQPValue;
use riverbed_core::HeaderValue;

use crate::headers::int_value;

/// The header where the broker records a message's dead-letter history.
pub(crate) const DEATH_HEADER: &str = "x-death";

/// Dead-letter reasons that end a delivery: the message had been delivered, so a later delivery
/// is another attempt. (`expired` and `maxlen` messages may never have been delivered.)
const DELIVERED_REASONS: &[&str] = &["rejected", "delivery_limit"];

/// One entry of `x-death`: how often a message was dead-lettered from one queue for one reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Death {
    pub queue: String,
    pub reason: String,
    pub exchange: String,
    pub count: u64,
    /// The first routing key it had in that queue, when recorded.
    pub routing_key: Option<String>,
    /// When it was last dead-lettered from that queue (seconds since the Unix epoch).
    pub time: Option<u64>,
}

/// The entries of an `x-death` value; anything that is not an entry is left out.
pub(crate) fn parse(value: &AMQPValue) -> Vec<Death> {
    let AMQPValue::FieldArray(entries) = value else {
        return Vec::new();
    };
    entries
        .as_slice()
        .iter()
        .filter_map(|entry| {
            let AMQPValue::FieldTable(t) = entry else {
                return None;
            };
            let text = |name: &str| match t.inner().get(name) {
                Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into(),
                Some(AMQPValue::ShortString(s)) => s.to_string(),
                _ => String::new(),
            };
            Some(Death {
                queue: text("queue"),
                reason: text("reason"),
                exchange: text("exchange"),
                count: t
                    .inner()
                    .get("count")
                    .and_then(int_value)
                    .and_then(|c| u64::try_from(c).ok())
                    .unwrap_or(1),
                routing_key: match t.inner().get("routing-keys") {
                    Some(AMQPValue::FieldArray(keys)) => {
                        keys.as_slice().first().and_then(|k| match k {
                            AMQPValue::LongString(s) => {
                                Some(String::from_utf8_lossy(s.as_bytes()).into_owned())
                            }
                            AMQPValue::ShortString(s) => Some(s.to_string()),
                            _ => None,
                        })
                    }
                    _ => None,
                },
                time: t
                    .inner()
                    .get("time")
                    .and_then(int_value)
                    .and_then(|c| u64::try_from(c).ok()),
            })
        })
        .collect()
}

/// How many times the message was delivered from `queue` and then dead-lettered (rejected
/// without requeue, or past a quorum queue's delivery limit) before coming back.
pub(crate) fn deliveries_from(deaths: &[Death], queue: &str) -> u64 {
    deaths
        .iter()
        .filter(|d| d.queue == queue && DELIVERED_REASONS.contains(&d.reason.as_str()))
        .map(|d| d.count)
        .sum()
}

/// The `x-death` header as Riverbed keeps it: a JSON list of `{queue, reason, exchange, count}`
/// (the routing keys and times of the full entries are left out).
pub(crate) fn summary(deaths: &[Death]) -> HeaderValue {
    let list: Vec<serde_json::Value> = deaths
        .iter()
        .map(|d| {
            serde_json::json!({
                "queue": d.queue,
                "reason": d.reason,
                "exchange": d.exchange,
                "count": d.count,
            })
        })
        .collect();
    HeaderValue::Str(serde_json::Value::Array(list).to_string())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use lapin::types::{FieldArray, FieldTable};

    /// An `x-death` entry as RabbitMQ writes it.
    pub(crate) fn entry(queue: &str, reason: &str, count: i64) -> AMQPValue {
        let mut t = FieldTable::default();
        t.insert("queue".into(), AMQPValue::LongString(queue.into()));
        t.insert("reason".into(), AMQPValue::LongString(reason.into()));
        t.insert("exchange".into(), AMQPValue::LongString("".into()));
        t.insert("count".into(), AMQPValue::LongLongInt(count));
        t.insert("time".into(), AMQPValue::Timestamp(1_700_000_000));
        t.insert(
            "routing-keys".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::LongString(queue.into())])),
        );
        AMQPValue::FieldTable(t)
    }

    pub(crate) fn x_death(entries: Vec<AMQPValue>) -> AMQPValue {
        AMQPValue::FieldArray(FieldArray::from(entries))
    }

    #[test]
    fn counts_deliveries_from_the_consumed_queue_only() {
        let value = x_death(vec![
            entry("orders", "rejected", 2),
            entry("orders.retry.128ms", "expired", 3),
            entry("orders", "expired", 5),
            entry("other", "rejected", 7),
        ]);
        let deaths = parse(&value);
        assert_eq!(deaths.len(), 4);
        assert_eq!(deaths[0].count, 2);
        assert_eq!(deaths[0].routing_key.as_deref(), Some("orders"));
        assert_eq!(deaths[0].time, Some(1_700_000_000));
        assert_eq!(deliveries_from(&deaths, "orders"), 2);
        assert_eq!(deliveries_from(&deaths, "nowhere"), 0);
        assert!(parse(&AMQPValue::LongString("junk".into())).is_empty());
    }

    #[test]
    fn the_summary_keeps_queue_reason_exchange_and_count() {
        let deaths = parse(&x_death(vec![entry("orders", "rejected", 2)]));
        assert_eq!(
            summary(&deaths).as_str(),
            Some(r#"[{"count":2,"exchange":"","queue":"orders","reason":"rejected"}]"#)
        );
    }
}
