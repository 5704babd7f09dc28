//! The unit that flows through a pipeline: payload, key, headers and delivery metadata.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::outcome::Failure;

/// Message headers, ordered by name so their serialisation is stable.
pub type Headers = BTreeMap<String, HeaderValue>;

/// One header value. Broker headers are typed; these are the types every broker can carry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum HeaderValue {
    /// A boolean flag.
    Bool(bool),
    /// A signed integer.
    Int(i64),
    /// A floating point number.
    Float(f64),
    /// A UTF-8 string.
    Str(String),
    /// Raw bytes (serialised as an array of numbers).
    Bytes(Vec<u8>),
}

impl HeaderValue {
    /// The value as an integer, when it is one (or a string holding one).
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            HeaderValue::Int(v) => Some(*v),
            HeaderValue::Str(s) => s.parse().ok(),
            HeaderValue::Float(f) if f.fract() == 0.0 => Some(*f as i64),
            _ => None,
        }
    }

    /// The value as a string slice, when it is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            HeaderValue::Str(s) => Some(s),
            _ => None,
        }
    }
}

impl fmt::Display for HeaderValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderValue::Bool(v) => write!(f, "{v}"),
            HeaderValue::Int(v) => write!(f, "{v}"),
            HeaderValue::Float(v) => write!(f, "{v}"),
            HeaderValue::Str(v) => f.write_str(v),
            HeaderValue::Bytes(v) => write!(f, "{}", String::from_utf8_lossy(v)),
        }
    }
}

impl From<&str> for HeaderValue {
    fn from(v: &str) -> Self {
        HeaderValue::Str(v.to_owned())
    }
}

impl From<String> for HeaderValue {
    fn from(v: String) -> Self {
        HeaderValue::Str(v)
    }
}

impl From<i64> for HeaderValue {
    fn from(v: i64) -> Self {
        HeaderValue::Int(v)
    }
}

/// Where a message came from and how often it has been delivered.
#[derive(Debug, Clone, PartialEq)]
pub struct Metadata {
    /// The producer's message id, when it set one.
    pub message_id: Option<String>,
    /// The broker says it delivered this message before.
    pub redelivered: bool,
    /// 1 on the first delivery; counts broker redeliveries and delayed retries.
    pub attempt: u32,
    /// How often the source delivered this message without it being settled, this delivery
    /// included (1 the first time), counted across restarts where the source can (AMQP
    /// `x-delivery-count` on quorum queues, the embedded log's stored count). The runtime
    /// dead-letters a message delivered more than `max_deliveries` times (`delivery_limit`):
    /// one that crashes the process is not redelivered forever.
    pub deliveries: u32,
    /// The position of the message in its source (log offset, stream offset), when it has one.
    pub position: Option<u64>,
    /// The routing key or subject the message was published with.
    pub subject: Option<String>,
    /// The exchange (or stream) the message was published to.
    pub exchange: Option<String>,
    /// When the producer stamped the message, if it did.
    pub timestamp: Option<SystemTime>,
    /// When this process received the message.
    pub received_at: SystemTime,
    /// The pipeline partition that handles the message (set by the runtime at intake).
    pub partition: u32,
}

impl Default for Metadata {
    fn default() -> Self {
        Metadata {
            message_id: None,
            redelivered: false,
            attempt: 1,
            deliveries: 1,
            position: None,
            subject: None,
            exchange: None,
            timestamp: None,
            received_at: SystemTime::now(),
            partition: 0,
        }
    }
}

/// A message: payload bytes, an optional partition key, headers, metadata, and the decoded JSON
/// body once something has decoded it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Message {
    /// The partition key: messages with equal keys keep their order.
    pub key: Option<String>,
    /// The raw payload as the broker delivered it.
    pub payload: Bytes,
    /// Broker or producer headers.
    pub headers: Headers,
    /// Delivery metadata.
    pub meta: Metadata,
    /// Shared, so a message fanned out to several sinks does not copy its decoded body; a
    /// change through [`Message::decode_json`] copies it first if it is shared.
    json: Option<Arc<serde_json::Value>>,
}

impl Message {
    /// A message with this payload, no key and default metadata.
    pub fn new(payload: impl Into<Bytes>) -> Self {
        Message {
            payload: payload.into(),
            ..Message::default()
        }
    }

    /// Sets the key.
    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets one header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<HeaderValue>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// A message whose payload is this JSON value, already decoded.
    pub fn from_json(value: serde_json::Value) -> Self {
        let payload = serde_json::to_vec(&value).expect("a JSON value always serialises");
        Message {
            payload: payload.into(),
            json: Some(Arc::new(value)),
            ..Message::default()
        }
    }

    /// The decoded JSON body, if the payload has been decoded.
    pub fn json(&self) -> Option<&serde_json::Value> {
        self.json.as_deref()
    }

    /// Decodes the payload as JSON once and returns the body.
    pub fn decode_json(&mut self) -> Result<&mut serde_json::Value, Failure> {
        if self.json.is_none() {
            let value = serde_json::from_slice(&self.payload)
                .map_err(|e| Failure::malformed(format!("payload is not valid JSON: {e}")))?;
            self.json = Some(Arc::new(value));
        }
        Ok(Arc::make_mut(
            self.json.as_mut().expect("decoded just above"),
        ))
    }

    /// Decodes the payload as JSON once and returns the body, without copying a shared one.
    pub fn decoded(&mut self) -> Result<&serde_json::Value, Failure> {
        if self.json.is_none() {
            let value = serde_json::from_slice(&self.payload)
                .map_err(|e| Failure::malformed(format!("payload is not valid JSON: {e}")))?;
            self.json = Some(Arc::new(value));
        }
        Ok(self.json.as_deref().expect("decoded just above"))
    }

    /// Replaces the JSON body and re-encodes the payload from it.
    pub fn set_json(&mut self, value: serde_json::Value) {
        self.payload = serde_json::to_vec(&value)
            .expect("a JSON value always serialises")
            .into();
        self.json = Some(Arc::new(value));
    }

    /// Re-encodes the payload after the JSON body was changed in place.
    pub fn reencode(&mut self) {
        if let Some(value) = &self.json {
            self.payload = serde_json::to_vec(value)
                .expect("a JSON value always serialises")
                .into();
        }
    }

    /// The same message without its decoded body (what the runtime keeps for dead letters).
    pub(crate) fn without_body(&self) -> Message {
        Message {
            key: self.key.clone(),
            payload: self.payload.clone(),
            headers: self.headers.clone(),
            meta: self.meta.clone(),
            json: None,
        }
    }

    /// Looks up a JSON pointer in the body, decoding the payload if needed.
    pub fn pointer(&mut self, pointer: &str) -> Result<Option<&serde_json::Value>, Failure> {
        Ok(json_pointer(self.decoded()?, pointer))
    }
}

/// Looks up a JSON pointer (RFC 6901) in `value`, like `serde_json::Value::pointer`, without
/// allocating unless a token is escaped (`~0`, `~1`): the pipeline resolves a few pointers per
/// message, and the allocations of the general version showed in profiles.
pub fn json_pointer<'a>(
    value: &'a serde_json::Value,
    pointer: &str,
) -> Option<&'a serde_json::Value> {
    if pointer.is_empty() {
        return Some(value);
    }
    let rest = pointer.strip_prefix('/')?;
    rest.split('/').try_fold(value, |target, token| {
        let unescaped;
        let token = if token.contains('~') {
            unescaped = token.replace("~1", "/").replace("~0", "~");
            unescaped.as_str()
        } else {
            token
        };
        match target {
            serde_json::Value::Object(map) => map.get(token),
            serde_json::Value::Array(list) => {
                if (token.len() > 1 && token.starts_with('0')) || token.starts_with('+') {
                    return None;
                }
                token.parse::<usize>().ok().and_then(|i| list.get(i))
            }
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_once_and_reports_malformed_payloads() {
        let mut m = Message::new(&b"{\"a\": 1}"[..]);
        assert_eq!(m.pointer("/a").unwrap(), Some(&serde_json::json!(1)));
        let mut bad = Message::new(&b"{nope"[..]);
        let err = bad.decode_json().unwrap_err();
        assert!(err.to_string().contains("not valid JSON"), "{err}");
    }

    #[test]
    fn pointers_resolve_like_serde_json() {
        let v = serde_json::json!({"a": {"b/c": [10, {"d~e": true}], "": 1}, "0": "zero"});
        for p in [
            "",
            "/a",
            "/a/b~1c",
            "/a/b~1c/0",
            "/a/b~1c/1/d~0e",
            "/a/",
            "/0",
            "/a/b~1c/01",
            "/a/b~1c/+1",
            "/a/b~1c/9",
            "/missing",
            "a",
            "/a/b~1c/0/x",
        ] {
            assert_eq!(json_pointer(&v, p), v.pointer(p), "{p}");
        }
    }

    #[test]
    fn header_values_convert() {
        assert_eq!(HeaderValue::from("7").as_i64(), Some(7));
        assert_eq!(HeaderValue::Int(3).to_string(), "3");
    }
}
