//! NATS headers ↔ Riverbed headers.

use async_nats::HeaderMap;
use riverbed_core::{HeaderValue, Headers};

/// The header JetStream deduplicates publishes by.
pub const MSG_ID: &str = "Nats-Msg-Id";

/// NATS headers as Riverbed headers (strings; the last value of a repeated header wins).
pub(crate) fn from_nats(map: Option<&HeaderMap>) -> Headers {
    let mut out = Headers::new();
    if let Some(map) = map {
        for (name, values) in map.iter() {
            if let Some(v) = values.last() {
                out.insert(name.to_string(), HeaderValue::Str(v.as_str().to_owned()));
            }
        }
    }
    out
}

/// Riverbed headers as NATS headers, as text. Headers whose name starts with `Nats-` are left
/// out: the server acts on them (`Nats-Expected-Stream`, `Nats-Msg-Id`...), and a copied one
/// would make it refuse or drop a republished message.
pub(crate) fn to_nats(headers: &Headers) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        if name.len() >= 5 && name[..5].eq_ignore_ascii_case("nats-") {
            continue;
        }
        if name.is_empty() || name.contains([':', ' ', '\r', '\n']) {
            continue;
        }
        let text = value.to_string().replace(['\r', '\n'], " ");
        map.insert(name.as_str(), text.as_str());
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_without_server_directives() {
        let mut h = Headers::new();
        h.insert("x-tenant".into(), "acme".into());
        h.insert("x-count".into(), HeaderValue::Int(3));
        h.insert("Nats-Msg-Id".into(), "m1".into());
        h.insert("Nats-Expected-Stream".into(), "OTHER".into());
        let back = from_nats(Some(&to_nats(&h)));
        assert_eq!(back.get("x-tenant"), Some(&HeaderValue::from("acme")));
        assert_eq!(back.get("x-count"), Some(&HeaderValue::from("3")));
        assert!(back.keys().all(|k| !k.starts_with("Nats-")), "{back:?}");
    }
}
