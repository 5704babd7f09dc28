//! Turning an AMQP delivery into a Riverbed message with its metadata.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use lapin::message::Delivery;
use riverbed_core::{Message, Metadata};

use crate::death::{self, DEATH_HEADER};
use crate::headers::{self, ATTEMPT_HEADER};

/// A delivery taken apart: the message, its delivery tag and its stream offset.
pub(crate) struct Received {
    pub message: Message,
    pub tag: u64,
    pub offset: Option<u64>,
}

/// Converts a delivery from `queue`. `attempt` is the retry attempt Riverbed wrote (1 when
/// absent) plus the earlier deliveries the broker knows of: its redeliveries
/// (`x-delivery-count` on quorum queues, else 1 if `redelivered`) and the dead-letter cycles
/// that `x-death` records for `queue` (delivered, rejected, and routed back). `deliveries`
/// counts the broker's redeliveries alone (this delivery included): what the runtime's
/// `max_deliveries` limits.
pub(crate) fn receive(d: Delivery, queue: &str) -> Received {
    let props = &d.properties;
    let (headers, attempt, deliveries, offset) = match props.headers() {
        Some(table) => {
            let retry_attempt = headers::int(table, ATTEMPT_HEADER)
                .and_then(|a| u32::try_from(a).ok())
                .filter(|a| *a >= 1)
                .unwrap_or(1);
            let redeliveries = headers::int(table, "x-delivery-count")
                .and_then(|c| u32::try_from(c).ok())
                .unwrap_or(u32::from(d.redelivered));
            let cycles = table.inner().get(DEATH_HEADER).map_or(0, |v| {
                u32::try_from(death::deliveries_from(&death::parse(v), queue)).unwrap_or(u32::MAX)
            });
            let offset = headers::int(table, "x-stream-offset").and_then(|o| u64::try_from(o).ok());
            (
                headers::from_table(table),
                retry_attempt
                    .saturating_add(redeliveries)
                    .saturating_add(cycles),
                redeliveries.saturating_add(1),
                offset,
            )
        }
        None => {
            let deliveries = 1 + u32::from(d.redelivered);
            (Default::default(), deliveries, deliveries, None)
        }
    };
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    let meta = Metadata {
        message_id: props.message_id().as_ref().map(|m| m.to_string()),
        redelivered: d.redelivered,
        attempt,
        deliveries,
        position: offset,
        subject: non_empty(d.routing_key.as_str()),
        exchange: non_empty(d.exchange.as_str()),
        timestamp: props
            .timestamp()
            .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s)),
        received_at: SystemTime::now(),
        ..Metadata::default()
    };
    let mut message = Message::new(Bytes::from(d.data));
    message.headers = headers;
    message.meta = meta;
    Received {
        message,
        tag: d.delivery_tag,
        offset,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::BasicProperties;
    use lapin::types::{AMQPValue, FieldTable};

    fn delivery(redelivered: bool, headers: Option<FieldTable>) -> Delivery {
        let mut d = Delivery::mock(7, "ex".into(), "rk".into(), redelivered, b"hi".to_vec());
        let mut p = BasicProperties::default().with_message_id("m1".into());
        if let Some(h) = headers {
            p = p.with_headers(h);
        }
        d.properties = p;
        d
    }

    fn receive_from(d: Delivery) -> Received {
        receive(d, "orders")
    }

    #[test]
    fn attempt_counts_retries_and_redeliveries() {
        let r = receive_from(delivery(false, None));
        assert_eq!(r.message.meta.attempt, 1);
        assert_eq!(r.tag, 7);
        assert_eq!(r.message.meta.subject.as_deref(), Some("rk"));
        assert_eq!(r.message.meta.exchange.as_deref(), Some("ex"));
        assert_eq!(r.message.meta.message_id.as_deref(), Some("m1"));
        assert_eq!(receive_from(delivery(true, None)).message.meta.attempt, 2);
        assert_eq!(
            receive_from(delivery(true, None)).message.meta.deliveries,
            2
        );
        let mut h = FieldTable::default();
        h.insert(ATTEMPT_HEADER.into(), AMQPValue::LongLongInt(3));
        assert_eq!(
            receive_from(delivery(false, Some(h.clone())))
                .message
                .meta
                .attempt,
            3
        );
        h.insert("x-delivery-count".into(), AMQPValue::LongInt(2));
        h.insert("x-stream-offset".into(), AMQPValue::LongLongInt(41));
        let r = receive_from(delivery(true, Some(h)));
        assert_eq!(r.message.meta.attempt, 5);
        assert_eq!(
            r.message.meta.deliveries, 3,
            "two earlier deliveries, then this one"
        );
        assert_eq!(r.offset, Some(41));
        assert_eq!(r.message.meta.position, Some(41));
    }

    #[test]
    fn attempt_counts_dead_letter_cycles_through_the_consumed_queue() {
        use crate::death::tests::{entry, x_death};
        let mut h = FieldTable::default();
        h.insert(
            DEATH_HEADER.into(),
            x_death(vec![
                entry("orders", "rejected", 2),
                entry("orders.retry.64ms", "expired", 1),
            ]),
        );
        let r = receive_from(delivery(false, Some(h.clone())));
        assert_eq!(
            r.message.meta.attempt, 3,
            "two rejections, then this delivery"
        );
        assert!(r.message.headers.contains_key(DEATH_HEADER), "summarised");
        h.insert(ATTEMPT_HEADER.into(), AMQPValue::LongLongInt(2));
        h.insert("x-delivery-count".into(), AMQPValue::LongInt(1));
        let r = receive_from(delivery(true, Some(h)));
        assert_eq!(r.message.meta.attempt, 2 + 1 + 2);
        let other = receive(
            delivery(
                false,
                Some({
                    let mut t = FieldTable::default();
                    t.insert(
                        DEATH_HEADER.into(),
                        x_death(vec![entry("elsewhere", "rejected", 4)]),
                    );
                    t
                }),
            ),
            "orders",
        );
        assert_eq!(
            other.message.meta.attempt, 1,
            "cycles through another queue"
        );
    }
}
