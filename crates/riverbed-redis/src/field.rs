//! Values taken from a message (a JSON pointer, the key, the message id) and key templates
//! such as `provider:{/provider}`.

use std::borrow::Cow;

use riverbed_core::{Failure, Message};
use serde_json::Value;

/// Where a value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    /// A JSON pointer into the payload (`/provider`).
    Pointer(String),
    /// The message key.
    Key,
    /// The producer's message id.
    MessageId,
}

impl std::str::FromStr for Field {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "$key" => Ok(Field::Key),
            "$message_id" => Ok(Field::MessageId),
            p if p.starts_with('/') => Ok(Field::Pointer(p.to_owned())),
            other => Err(format!(
                "`{other}` is not a field: use a JSON pointer (\"/id\"), \"$key\" or \"$message_id\""
            )),
        }
    }
}

/// The decoded body of a message (decoded now if the pipeline did not).
pub fn body(msg: &Message) -> Result<Cow<'_, Value>, Failure> {
    match msg.json() {
        Some(v) => Ok(Cow::Borrowed(v)),
        None => serde_json::from_slice(&msg.payload)
            .map(Cow::Owned)
            .map_err(|e| Failure::malformed(format!("payload is not valid JSON: {e}"))),
    }
}

impl Field {
    /// The value as text; a missing value is a permanent `missing_field` failure.
    pub fn text(&self, msg: &Message, body: &Value) -> Result<String, Failure> {
        let found = match self {
            Field::Key => msg.key.clone(),
            Field::MessageId => msg.meta.message_id.clone(),
            Field::Pointer(p) => match riverbed_core::json_pointer(body, p) {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(v) => Some(v.to_string()),
            },
        };
        found.ok_or_else(|| Failure::new("missing_field", format!("no value at {self:?}")))
    }

    /// The raw JSON value at a pointer (`None` for the key and message id fields).
    pub fn json<'a>(&self, body: &'a Value) -> Option<&'a Value> {
        match self {
            Field::Pointer(p) => riverbed_core::json_pointer(body, p),
            _ => None,
        }
    }
}

/// A Redis key made of literal text and `{field}` parts: `provider:{/provider}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyTemplate(Vec<Part>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Field(Field),
}

impl std::str::FromStr for KeyTemplate {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_owned()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| format!("key `{s}`: unclosed `{{`"))?;
            parts.push(Part::Field(rest[open + 1..open + close].parse()?));
            rest = &rest[open + close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        if parts.is_empty() {
            return Err("a key may not be empty".into());
        }
        Ok(KeyTemplate(parts))
    }
}

impl KeyTemplate {
    /// The key for this message.
    pub fn render(&self, msg: &Message, body: &Value) -> Result<String, Failure> {
        let mut out = String::new();
        for p in &self.0 {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Field(f) => out.push_str(&f.text(msg, body)?),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_render_fields() {
        let t: KeyTemplate = "provider:{/provider}:{$key}".parse().unwrap();
        let m = Message::from_json(serde_json::json!({"provider": "acme"})).with_key("k1");
        let b = body(&m).unwrap();
        assert_eq!(t.render(&m, &b).unwrap(), "provider:acme:k1");
        let missing = Message::from_json(serde_json::json!({}));
        let b = body(&missing).unwrap();
        assert_eq!(t.render(&missing, &b).unwrap_err().reason, "missing_field");
        assert!("x:{provider}".parse::<KeyTemplate>().is_err());
        assert!("x:{/a".parse::<KeyTemplate>().is_err());
    }
}
