//! Conversions between AMQP field tables and Riverbed headers.

use lapin::types::{AMQPValue, ByteArray, FieldTable, LongString, ShortString};
use riverbed_core::{HeaderValue, Headers};

use crate::death::{self, DEATH_HEADER};

/// The attempt number Riverbed writes on messages it sends to a retry queue.
pub const ATTEMPT_HEADER: &str = "x-riverbed-attempt";

/// Headers the broker manages: never copied onto a message Riverbed publishes.
const BROKER_HEADERS: &[&str] = &[
    "x-death",
    "x-delivery-count",
    "x-stream-offset",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-last-death-exchange",
    "x-last-death-queue",
    "x-last-death-reason",
    "x-received-from",
];

/// Converts delivered headers. Nested tables and arrays become their JSON text; `x-death`, the
/// broker's dead-letter history, is summarised (see [`death::summary`]).
pub(crate) fn from_table(table: &FieldTable) -> Headers {
    table
        .inner()
        .iter()
        .filter_map(|(k, v)| {
            let value = if k.as_str() == DEATH_HEADER {
                death::summary(&death::parse(v))
            } else {
                header_value(v)?
            };
            Some((k.to_string(), value))
        })
        .collect()
}

fn header_value(v: &AMQPValue) -> Option<HeaderValue> {
    Some(match v {
        AMQPValue::Boolean(b) => HeaderValue::Bool(*b),
        AMQPValue::ShortShortInt(i) => HeaderValue::Int((*i).into()),
        AMQPValue::ShortShortUInt(i) => HeaderValue::Int((*i).into()),
        AMQPValue::ShortInt(i) => HeaderValue::Int((*i).into()),
        AMQPValue::ShortUInt(i) => HeaderValue::Int((*i).into()),
        AMQPValue::LongInt(i) => HeaderValue::Int((*i).into()),
        AMQPValue::LongUInt(i) => HeaderValue::Int((*i).into()),
        AMQPValue::LongLongInt(i) => HeaderValue::Int(*i),
        AMQPValue::Timestamp(t) => HeaderValue::Int(i64::try_from(*t).ok()?),
        AMQPValue::Float(f) => HeaderValue::Float((*f).into()),
        AMQPValue::Double(f) => HeaderValue::Float(*f),
        AMQPValue::DecimalValue(d) => {
            HeaderValue::Float(f64::from(d.value) / 10f64.powi(d.scale.into()))
        }
        AMQPValue::ShortString(s) => HeaderValue::Str(s.to_string()),
        AMQPValue::LongString(s) => match std::str::from_utf8(s.as_bytes()) {
            Ok(text) => HeaderValue::Str(text.to_owned()),
            Err(_) => HeaderValue::Bytes(s.as_bytes().to_vec()),
        },
        AMQPValue::ByteArray(b) => HeaderValue::Bytes(b.as_slice().to_vec()),
        AMQPValue::FieldArray(_) | AMQPValue::FieldTable(_) => {
            HeaderValue::Str(json(v).to_string())
        }
        AMQPValue::Void => return None,
    })
}

/// A nested value as plain JSON.
fn json(v: &AMQPValue) -> serde_json::Value {
    use serde_json::Value;
    match v {
        AMQPValue::FieldArray(a) => Value::Array(a.as_slice().iter().map(json).collect()),
        AMQPValue::FieldTable(t) => Value::Object(
            t.inner()
                .iter()
                .map(|(k, v)| (k.to_string(), json(v)))
                .collect(),
        ),
        AMQPValue::Void => Value::Null,
        scalar => match header_value(scalar) {
            Some(HeaderValue::Bool(b)) => Value::Bool(b),
            Some(HeaderValue::Int(i)) => Value::from(i),
            Some(HeaderValue::Float(f)) => Value::from(f),
            Some(HeaderValue::Str(s)) => Value::String(s),
            Some(HeaderValue::Bytes(b)) => Value::from(b),
            None => Value::Null,
        },
    }
}

/// Converts headers for publishing, leaving out broker-managed ones and names longer than
/// AMQP allows.
pub(crate) fn to_table(headers: &Headers) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in headers {
        if BROKER_HEADERS.contains(&k.as_str()) {
            continue;
        }
        let Ok(name) = ShortString::try_new(k.as_str()) else {
            tracing::warn!(header = %k, "Header name longer than 255 bytes left out");
            continue;
        };
        t.insert(name, amqp_value(v));
    }
    t
}

fn amqp_value(v: &HeaderValue) -> AMQPValue {
    match v {
        HeaderValue::Bool(b) => AMQPValue::Boolean(*b),
        HeaderValue::Int(i) => AMQPValue::LongLongInt(*i),
        HeaderValue::Float(f) => AMQPValue::Double(*f),
        HeaderValue::Str(s) => AMQPValue::LongString(LongString::from(s.as_str())),
        HeaderValue::Bytes(b) => AMQPValue::ByteArray(ByteArray::from(b.as_slice())),
    }
}

/// An integer header, whatever integer type the publisher used.
pub(crate) fn int(table: &FieldTable, name: &str) -> Option<i64> {
    int_value(table.inner().get(name)?)
}

/// An integer value, whatever integer type (or decimal text) it was written as.
pub(crate) fn int_value(value: &AMQPValue) -> Option<i64> {
    match value {
        AMQPValue::ShortShortInt(i) => Some((*i).into()),
        AMQPValue::ShortShortUInt(i) => Some((*i).into()),
        AMQPValue::ShortInt(i) => Some((*i).into()),
        AMQPValue::ShortUInt(i) => Some((*i).into()),
        AMQPValue::LongInt(i) => Some((*i).into()),
        AMQPValue::LongUInt(i) => Some((*i).into()),
        AMQPValue::LongLongInt(i) => Some(*i),
        AMQPValue::Timestamp(t) => i64::try_from(*t).ok(),
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok()?.parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_scalar_headers_and_drops_broker_ones() {
        let mut h = Headers::new();
        h.insert("tenant".into(), "acme".into());
        h.insert("n".into(), HeaderValue::Int(7));
        h.insert("ok".into(), HeaderValue::Bool(true));
        h.insert("raw".into(), HeaderValue::Bytes(vec![0xff, 0]));
        h.insert("x-delivery-count".into(), HeaderValue::Int(3));
        let t = to_table(&h);
        assert!(!t.contains_key("x-delivery-count"));
        let back = from_table(&t);
        h.remove("x-delivery-count");
        assert_eq!(back, h);
        assert_eq!(int(&t, "n"), Some(7));
    }

    #[test]
    fn nested_values_become_json_and_x_death_is_summarised() {
        let mut inner = FieldTable::default();
        inner.insert("a".into(), AMQPValue::LongLongInt(1));
        let mut t = FieldTable::default();
        t.insert("nested".into(), AMQPValue::FieldTable(inner));
        t.insert(
            "x-death".into(),
            death::tests::x_death(vec![death::tests::entry("q", "rejected", 1)]),
        );
        let h = from_table(&t);
        assert_eq!(h["nested"].as_str(), Some(r#"{"a":1}"#));
        let summary = h["x-death"].as_str().expect("x-death kept as text");
        assert!(summary.contains(r#""reason":"rejected""#), "{summary}");
        assert!(!summary.contains("routing-keys"), "{summary}");
        assert!(
            !to_table(&h).contains_key("x-death"),
            "never published again"
        );
    }
}
