//! Partition keys: where a message's key comes from, and the stable hash that places it.

use std::fmt;
use std::str::FromStr;

use crate::message::Message;
use crate::outcome::Failure;

/// Where the partition key of a message comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum KeySpec {
    /// The key the source set (the embedded log's key column); messages without one are spread
    /// over the partitions in turn (no order between them is promised).
    #[default]
    Source,
    /// A JSON pointer into the decoded payload, such as `/sensor_id`. The payload is decoded once
    /// here; a malformed payload or a missing field is dead-lettered.
    JsonPointer(String),
    /// A header value.
    Header(String),
    /// The routing key or subject.
    Subject,
    /// The producer's message id.
    MessageId,
}

impl FromStr for KeySpec {
    type Err = String;

    /// `""` or `"source"`, `"/json/pointer"`, `"header:NAME"`, `"subject"`, `"message_id"`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "" | "source" => Ok(KeySpec::Source),
            "subject" | "routing_key" => Ok(KeySpec::Subject),
            "message_id" => Ok(KeySpec::MessageId),
            p if p.starts_with('/') => Ok(KeySpec::JsonPointer(p.to_owned())),
            h if h.starts_with("header:") && h.len() > 7 => Ok(KeySpec::Header(h[7..].to_owned())),
            other => Err(format!(
                "`{other}` is not a key: use a JSON pointer such as \"/id\", \"header:NAME\", \"subject\", \"message_id\" or \"source\""
            )),
        }
    }
}

impl fmt::Display for KeySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySpec::Source => f.write_str("source"),
            KeySpec::JsonPointer(p) => f.write_str(p),
            KeySpec::Header(h) => write!(f, "header:{h}"),
            KeySpec::Subject => f.write_str("subject"),
            KeySpec::MessageId => f.write_str("message_id"),
        }
    }
}

impl KeySpec {
    /// Sets `msg.key` from this spec. A missing key is a permanent failure (except for
    /// [`KeySpec::Source`], where no key means no ordering is needed).
    pub fn apply(&self, msg: &mut Message) -> Result<(), Failure> {
        let key = match self {
            KeySpec::Source => return Ok(()),
            KeySpec::JsonPointer(p) => match msg.pointer(p)? {
                None | Some(serde_json::Value::Null) => None,
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                Some(v) => Some(v.to_string()),
            },
            KeySpec::Header(h) => msg.headers.get(h).map(|v| v.to_string()),
            KeySpec::Subject => msg.meta.subject.clone(),
            KeySpec::MessageId => msg.meta.message_id.clone(),
        };
        match key {
            Some(k) => {
                msg.key = Some(k);
                Ok(())
            }
            None => Err(Failure::missing_key(format!("no key at {self}"))),
        }
    }
}

/// The partition of `key` among `partitions`: xxh3, stable across processes, versions and
/// machines, so every instance places a key in the same partition.
pub fn partition_of(key: &str, partitions: usize) -> usize {
    (xxhash_rust::xxh3::xxh3_64(key.as_bytes()) % partitions as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    const PINNED: [usize; 5] = [2, 2, 1, 3, 2];

    #[test]
    fn parses_and_extracts_keys() {
        let spec: KeySpec = "/sensor/id".parse().unwrap();
        let mut m = Message::new(r#"{"sensor":{"id":42}}"#);
        spec.apply(&mut m).unwrap();
        assert_eq!(m.key.as_deref(), Some("42"));
        let mut missing = Message::new(r#"{"other":1}"#);
        let err = spec.apply(&mut missing).unwrap_err();
        assert_eq!(err.reason, "missing_key");
        let mut bad = Message::new("not json");
        assert_eq!(
            spec.apply(&mut bad).unwrap_err().reason,
            "malformed_payload"
        );
        assert!("sensor_id".parse::<KeySpec>().is_err());
        let h: KeySpec = "header:tenant".parse().unwrap();
        let mut m = Message::new("x").with_header("tenant", "acme");
        h.apply(&mut m).unwrap();
        assert_eq!(m.key.as_deref(), Some("acme"));
    }

    #[test]
    fn partitions_are_stable() {
        // Pinned values: changing the hash would move keys between partitions across versions
        // (and between instances of different versions running side by side).
        let pinned: Vec<usize> = ["sensor-1", "sensor-2", "acme", "k0", ""]
            .iter()
            .map(|k| partition_of(k, 8))
            .collect();
        assert_eq!(pinned, PINNED);
        let spread: std::collections::HashSet<usize> = (0..100)
            .map(|i| partition_of(&format!("k{i}"), 4))
            .collect();
        assert_eq!(spread.len(), 4);
    }
}
