//! The JSON pointer (`riverbed_core::json_pointer`) agrees with serde_json's RFC 6901 pointer,
//! and key extraction from any payload never panics. Input: the pointer, a newline, the
//! document.

#![no_main]

use libfuzzer_sys::fuzz_target;
use riverbed_core::{KeySpec, Message, json_pointer};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (pointer, doc) = text.split_once('\n').unwrap_or((&text, ""));
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(doc) {
        assert_eq!(
            json_pointer(&value, pointer),
            value.pointer(pointer),
            "{pointer:?}"
        );
    }
    if let Ok(spec) = pointer.parse::<KeySpec>() {
        let mut msg = Message::new(doc.as_bytes().to_vec());
        if spec.apply(&mut msg).is_ok() && matches!(spec, KeySpec::JsonPointer(_)) {
            assert!(msg.key.is_some());
        }
    }
});
