//! The exact text of a JSON number in a payload: `serde_json` reads every non-integer number
//! as an `f64`, which rounds `0.1000000000000000055` to `0.1`; exact columns (numeric,
//! integers) take the digits the producer wrote instead.

use std::collections::HashMap;

use serde_json::value::RawValue;

/// The text of the number at JSON pointer `pointer` in `payload`, if `payload` is JSON, has a
/// number there, and that number reads as `decoded` (when it does not, the decoded body did not
/// come from this payload, e.g. a processor built it, and its `f64` is the value itself).
pub(crate) fn number_text<'a>(payload: &'a [u8], pointer: &str, decoded: f64) -> Option<&'a str> {
    let mut raw: &'a RawValue = serde_json::from_slice(payload).ok()?;
    if !pointer.is_empty() {
        for token in pointer.strip_prefix('/')?.split('/') {
            raw = child(raw, &unescape(token))?;
        }
    }
    let text = raw.get().trim();
    // Read as serde_json reads it (its float parsing is not always std's, to the last bit).
    let parsed: f64 = serde_json::from_str(text).ok()?;
    (parsed.to_bits() == decoded.to_bits()).then_some(text)
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

/// The member `token` of an object, or the element `token` of an array (the same rules as
/// `riverbed_core::json_pointer`: no leading zeros or `+`; the last duplicate key wins).
fn child<'a>(raw: &'a RawValue, token: &str) -> Option<&'a RawValue> {
    match raw.get().trim_start().as_bytes().first()? {
        b'{' => serde_json::from_str::<HashMap<String, &RawValue>>(raw.get())
            .ok()?
            .remove(token),
        b'[' => {
            if (token.len() > 1 && token.starts_with('0')) || token.starts_with('+') {
                return None;
            }
            let index: usize = token.parse().ok()?;
            serde_json::from_str::<Vec<&RawValue>>(raw.get())
                .ok()?
                .get(index)
                .copied()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_digits_the_producer_wrote() {
        let p = br#"{"a": {"b~/": [1, 0.1000000000000000055]}, "c": 2.50}"#;
        assert_eq!(
            number_text(p, "/a/b~0~1/1", 0.1),
            Some("0.1000000000000000055")
        );
        assert_eq!(number_text(p, "/c", 2.5), Some("2.50"));
        assert_eq!(
            number_text(p, "/c", 2.6),
            None,
            "a body that is not the payload"
        );
        assert_eq!(number_text(p, "/a/b~0~1/01", 0.1), None);
        assert_eq!(number_text(b"not json", "/c", 2.5), None);
    }

    #[test]
    fn long_mantissas_are_found_as_serde_json_reads_them() {
        // Found by the property test: serde_json and std round this one differently.
        let text = "241418687667616720.00000000000000000001";
        let payload = format!(r#"{{"v": {text}}}"#);
        let decoded: serde_json::Value = serde_json::from_str(&payload).unwrap();
        let f = decoded["v"].as_f64().unwrap();
        assert_eq!(number_text(payload.as_bytes(), "/v", f), Some(text));
    }
}
