//! AMQP header tables from the wire (x-death, x-delivery-count, Riverbed's attempt): decoding
//! never panics, and headers published again read back the same.

#![no_main]

use libfuzzer_sys::fuzz_target;
use riverbed_core::HeaderValue;

/// Headers the broker manages, left out when Riverbed publishes.
const BROKER: [&str; 3] = ["x-death", "x-delivery-count", "x-stream-offset"];

fuzz_target!(|data: &[u8]| {
    let Some(d) = riverbed_amqp::fuzzing::decode_headers(data, "orders") else {
        return;
    };
    for (name, value) in &d.headers {
        if BROKER.contains(&name.as_str()) || name.starts_with("x-first-death") {
            continue;
        }
        if name.starts_with("x-last-death") || name == "x-received-from" {
            continue;
        }
        let again = d.republished.get(name);
        match value {
            HeaderValue::Float(f) if f.is_nan() => {
                assert!(matches!(again, Some(HeaderValue::Float(g)) if g.is_nan()))
            }
            _ => assert_eq!(again, Some(value), "{name}"),
        }
    }
});
