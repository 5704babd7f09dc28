//! A small entry point for the fuzzers (`fuzz/` at the repository root), not a stable API:
//! AMQP header tables decoded from the wire as a delivery's headers are read.

use lapin::types::parsing::parse_field_table;
use riverbed_core::{HeaderValue, Headers};

use crate::death::{self, DEATH_HEADER};
use crate::headers::{self, ATTEMPT_HEADER};

/// What Riverbed reads from one headers table.
#[derive(Debug)]
pub struct Decoded {
    /// The headers as the message carries them.
    pub headers: Headers,
    /// Those headers published again and read back (Riverbed's own conversion both ways).
    pub republished: Headers,
    /// Deliveries from the queue that `x-death` records.
    pub deaths_from_queue: u64,
    /// The `x-death` summary header.
    pub death_summary: Option<HeaderValue>,
    /// Riverbed's retry attempt header, as an integer.
    pub attempt: Option<i64>,
    /// The quorum queue's delivery count.
    pub delivery_count: Option<i64>,
}

/// Decodes `wire` (an AMQP field table, as in a basic.properties frame) for a delivery from
/// `queue`; `None` when it is not a field table.
pub fn decode_headers(wire: &[u8], queue: &str) -> Option<Decoded> {
    let (_, table) = parse_field_table(wire).ok()?;
    let headers = headers::from_table(&table);
    let deaths = table.inner().get(DEATH_HEADER).map(death::parse);
    Some(Decoded {
        republished: headers::from_table(&headers::to_table(&headers)),
        deaths_from_queue: deaths
            .as_deref()
            .map_or(0, |d| death::deliveries_from(d, queue)),
        death_summary: deaths.as_deref().map(death::summary),
        attempt: headers::int(&table, ATTEMPT_HEADER),
        delivery_count: headers::int(&table, "x-delivery-count"),
        headers,
    })
}
