//! Values taken from each message for headers and the method: a JSON pointer into the
//! payload, the key, the message id, the subject or a header.

use std::str::FromStr;

use riverbed_core::{HeaderValue, Message, json_pointer};
use serde_json::Value;

/// Where a per-message value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FieldRef {
    /// A JSON pointer into the payload (`/tenant`).
    Pointer(String),
    /// The message key.
    Key,
    /// The producer's message id.
    MessageId,
    /// The routing key or subject.
    Subject,
    /// A message header.
    Header(String),
}

impl FromStr for FieldRef {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "$key" => FieldRef::Key,
            "$message_id" => FieldRef::MessageId,
            "$subject" => FieldRef::Subject,
            p if p.starts_with('/') => FieldRef::Pointer(p.to_owned()),
            h => match h.strip_prefix("$header.") {
                Some(name) if !name.is_empty() => FieldRef::Header(name.to_owned()),
                _ => {
                    return Err(format!(
                        "`{s}` is not a field: use a JSON pointer (\"/tenant\"), $key, \
                         $message_id, $subject or $header.NAME"
                    ));
                }
            },
        })
    }
}

impl FieldRef {
    /// True when the payload must be decoded to read it.
    pub fn needs_payload(&self) -> bool {
        matches!(self, FieldRef::Pointer(_))
    }

    /// The value of `m` (with `json` its decoded payload when needed); `None` when absent.
    pub fn value(&self, m: &Message, json: Option<&Value>) -> Result<Option<String>, String> {
        Ok(match self {
            FieldRef::Key => m.key.clone(),
            FieldRef::MessageId => m.meta.message_id.clone(),
            FieldRef::Subject => m.meta.subject.clone(),
            FieldRef::Header(name) => match m.headers.get(name) {
                None => None,
                Some(HeaderValue::Bytes(b)) => Some(
                    String::from_utf8(b.clone())
                        .map_err(|_| format!("header `{name}` is not UTF-8 text"))?,
                ),
                Some(v) => Some(v.to_string()),
            },
            FieldRef::Pointer(p) => match json.and_then(|j| json_pointer(j, p)) {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Bool(b)) => Some(b.to_string()),
                Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Some(n.to_string()),
                Some(_) => {
                    return Err(format!("field `{p}` is not text, an integer or a boolean"));
                }
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_fields_parse_and_read() {
        let m = Message::new(r#"{"t":"acme","n":7,"f":1.5,"o":{}}"#)
            .with_key("k1")
            .with_header("trace", "abc");
        let json: Value = serde_json::from_slice(&m.payload).unwrap();
        let read = |s: &str| s.parse::<FieldRef>().unwrap().value(&m, Some(&json));
        assert_eq!(read("/t").unwrap().as_deref(), Some("acme"));
        assert_eq!(read("/n").unwrap().as_deref(), Some("7"));
        assert_eq!(read("/missing").unwrap(), None);
        assert!(
            read("/f").is_err(),
            "a float is not turned into text silently"
        );
        assert!(read("/o").is_err());
        assert_eq!(read("$key").unwrap().as_deref(), Some("k1"));
        assert_eq!(read("$header.trace").unwrap().as_deref(), Some("abc"));
        assert_eq!(read("$message_id").unwrap(), None);
        assert!("tenant".parse::<FieldRef>().is_err());
        assert!("$header.".parse::<FieldRef>().is_err());
    }
}
