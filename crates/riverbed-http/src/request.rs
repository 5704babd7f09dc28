//! Messages into requests: the method, URL and headers of each message, and bodies of one
//! message or of a whole batch (JSON array, NDJSON).

use bytes::Bytes;
use reqwest::Method;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use riverbed_core::{Failure, Message};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::config::BodyFormat;
use crate::settings::{MethodSpec, Settings, method};

/// The header carrying the idempotency key.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Where one message goes: requests with equal targets may share a batch body.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Target {
    pub method: Method,
    pub url: String,
    pub headers: HeaderMap,
}

/// One request to send, for the messages at `indices` of the batch.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub indices: Vec<usize>,
    pub target: Target,
    pub body: Bytes,
}

/// The target of `m`, or why it has none (a permanent failure: the message is dead-lettered).
pub(crate) fn target(s: &Settings, m: &Message) -> Result<Target, Failure> {
    let decoded;
    let json = if needs_payload(s) {
        decoded = match m.json() {
            Some(j) => Some(j.clone()),
            None => Some(
                serde_json::from_slice::<Value>(&m.payload)
                    .map_err(|e| Failure::malformed(format!("payload is not JSON: {e}")))?,
            ),
        };
        decoded.as_ref()
    } else {
        None
    };
    let unsendable = |e: String| Failure::new("unsendable", e);
    let method = match &s.method {
        MethodSpec::Fixed(m) => m.clone(),
        MethodSpec::From(f) => {
            let name = f
                .value(m, json)
                .map_err(unsendable)?
                .ok_or_else(|| unsendable("the message has no method field".into()))?;
            method(&name).map_err(unsendable)?
        }
    };
    let url = s.url.render(m, "the URL").map_err(unsendable)?;
    let mut headers = HeaderMap::new();
    for (name, field) in &s.header_fields {
        if let Some(v) = field.value(m, json).map_err(unsendable)? {
            let v = HeaderValue::from_str(&v)
                .map_err(|_| unsendable(format!("header `{name}` would not be a header value")))?;
            headers.insert(name.clone(), v);
        }
    }
    Ok(Target {
        method,
        url,
        headers,
    })
}

fn needs_payload(s: &Settings) -> bool {
    s.header_fields.iter().any(|(_, f)| f.needs_payload())
        || matches!(&s.method, MethodSpec::From(f) if f.needs_payload())
}

/// The request for the messages at `indices` (all with `target`; in a batch body, each
/// payload already checked to be JSON).
pub(crate) fn call(s: &Settings, batch: &[Message], indices: Vec<usize>, target: Target) -> Call {
    let body = match s.body {
        BodyFormat::Message => batch[indices[0]].payload.clone(),
        BodyFormat::JsonArray => {
            let mut out = Vec::from(&b"["[..]);
            for (n, &i) in indices.iter().enumerate() {
                if n > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(&batch[i].payload);
            }
            out.push(b']');
            Bytes::from(out)
        }
        BodyFormat::Ndjson => {
            let mut out = Vec::new();
            for &i in &indices {
                // JSON strings hold no raw line breaks: any in the text is white space.
                out.extend(
                    batch[i]
                        .payload
                        .iter()
                        .map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b }),
                );
                out.push(b'\n');
            }
            Bytes::from(out)
        }
    };
    let mut target = target;
    if s.idempotency_key
        && let Some(key) = idempotency_key(batch, &indices)
        && let Ok(v) = HeaderValue::from_str(&key)
    {
        target
            .headers
            .insert(HeaderName::from_static(IDEMPOTENCY_KEY), v);
    }
    Call {
        indices,
        target,
        body,
    }
}

/// Checks that the payload is one JSON value (a batch body is JSON).
fn json_payload(m: &Message) -> Result<(), Failure> {
    serde_json::from_slice::<&RawValue>(&m.payload)
        .map(drop)
        .map_err(|e| {
            Failure::malformed(format!(
                "payload is not JSON, so it cannot join a batch body: {e}"
            ))
        })
}

/// The message id of a single message; for several, a digest of their ids in order. None when
/// a message has no id.
fn idempotency_key(batch: &[Message], indices: &[usize]) -> Option<String> {
    if let [i] = indices {
        return batch[*i].meta.message_id.clone();
    }
    let mut joined = Vec::new();
    for &i in indices {
        joined.extend_from_slice(batch[i].meta.message_id.as_deref()?.as_bytes());
        joined.push(b'\n');
    }
    Some(format!(
        "batch-{:032x}",
        xxhash_rust::xxh3::xxh3_128(&joined)
    ))
}

/// The batch as requests, in order: one per message, or (batch bodies) one per run of
/// consecutive messages with the same target. Messages that cannot be sent come back as
/// failures, by index.
pub(crate) fn plan(s: &Settings, batch: &[Message]) -> (Vec<Call>, Vec<(usize, Failure)>) {
    let mut calls = Vec::new();
    let mut failed = Vec::new();
    let mut run: Option<(Target, Vec<usize>)> = None;
    let flush = |run: Option<(Target, Vec<usize>)>, calls: &mut Vec<Call>| {
        if let Some((t, idx)) = run {
            calls.push(call(s, batch, idx, t));
        }
    };
    for (i, m) in batch.iter().enumerate() {
        let checked = match s.body {
            BodyFormat::Message => Ok(()),
            BodyFormat::JsonArray | BodyFormat::Ndjson => json_payload(m),
        };
        let t = match checked.and_then(|()| target(s, m)) {
            Ok(t) => t,
            Err(f) => {
                failed.push((i, f));
                continue;
            }
        };
        match &mut run {
            Some((rt, idx)) if s.body != BodyFormat::Message && *rt == t => idx.push(i),
            _ => {
                flush(run.take(), &mut calls);
                run = Some((t, vec![i]));
            }
        }
    }
    flush(run, &mut calls);
    (calls, failed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HttpSinkConfig;

    fn settings(body: BodyFormat) -> Settings {
        let mut c = HttpSinkConfig::new("http://h/orders/{key}");
        c.body = body;
        c.header_fields.insert("X-Tenant".into(), "/tenant".into());
        Settings::try_from(c).unwrap()
    }

    fn msg(id: &str, key: &str, payload: &str) -> Message {
        let mut m = Message::new(payload.to_owned()).with_key(key);
        m.meta.message_id = Some(id.into());
        m
    }

    #[test]
    fn http_batch_bodies_group_runs_of_one_target_and_refuse_only_non_json() {
        let batch = vec![
            msg("a", "k1", r#"{"tenant":"t","n":1}"#),
            msg("b", "k1", "{\n\"tenant\":\"t\",\"n\":2}"),
            msg("c", "k1", "not json"),
            msg("d", "k2", r#"{"tenant":"t","n":4}"#),
        ];
        let (calls, failed) = plan(&settings(BodyFormat::Ndjson), &batch);
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].0, 2);
        assert_eq!(failed[0].1.reason, "malformed_payload");
        assert_eq!(calls.len(), 2, "k1's run, then k2 (another URL)");
        assert_eq!(calls[0].indices, vec![0, 1]);
        assert_eq!(calls[0].target.url, "http://h/orders/k1");
        assert_eq!(
            &calls[0].body[..],
            b"{\"tenant\":\"t\",\"n\":1}\n{ \"tenant\":\"t\",\"n\":2}\n"
        );
        assert_eq!(calls[0].target.headers["x-tenant"], "t");
        let key = calls[0].target.headers[IDEMPOTENCY_KEY].to_str().unwrap();
        assert!(key.starts_with("batch-"), "{key}");
        assert_eq!(calls[1].target.headers[IDEMPOTENCY_KEY], "d");
        let again = plan(&settings(BodyFormat::Ndjson), &batch).0;
        assert_eq!(
            again[0].target.headers[IDEMPOTENCY_KEY], key,
            "stable per ids"
        );
        let (arrays, _) = plan(&settings(BodyFormat::JsonArray), &batch);
        assert_eq!(
            &arrays[0].body[..],
            b"[{\"tenant\":\"t\",\"n\":1},{\n\"tenant\":\"t\",\"n\":2}]"
        );
    }

    #[test]
    fn http_single_message_bodies_pass_the_payload_unchanged() {
        let batch = vec![
            msg("a", "k1", "plain text"),
            msg("b", "k1", "{\"tenant\":7}"),
        ];
        let mut c = HttpSinkConfig::new("http://h/x");
        c.idempotency_key = false;
        let (calls, failed) = plan(&Settings::try_from(c).unwrap(), &batch);
        assert!(failed.is_empty());
        assert_eq!(calls.len(), 2);
        assert_eq!(&calls[0].body[..], b"plain text");
        assert!(!calls[0].target.headers.contains_key(IDEMPOTENCY_KEY));
        let (_, failed) = plan(&settings(BodyFormat::Message), &batch);
        assert_eq!(failed.len(), 1, "a pointer header needs a JSON payload");
        assert_eq!(failed[0].0, 0);
    }

    #[test]
    fn http_method_from_a_field_is_checked_per_message() {
        let mut c = HttpSinkConfig::new("http://h/x");
        c.method_from = Some("/op".into());
        let s = Settings::try_from(c).unwrap();
        let batch = vec![
            msg("a", "k", r#"{"op":"DELETE"}"#),
            msg("b", "k", r#"{"op":"GET"}"#),
            msg("c", "k", r#"{}"#),
        ];
        let (calls, failed) = plan(&s, &batch);
        assert_eq!(calls[0].target.method, Method::DELETE);
        let refused: Vec<_> = failed
            .iter()
            .map(|(i, f)| (*i, f.reason.as_ref()))
            .collect();
        assert_eq!(refused, vec![(1, "unsendable"), (2, "unsendable")]);
    }
}
