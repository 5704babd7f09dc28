//! What a quorum queue gets when the source creates it: a delivery limit and a dead-letter
//! target, so the broker never drops a message it gave up redelivering.

use lapin::types::{AMQPValue, FieldTable};

use super::SourceSettings;

/// How far the broker's delivery limit lies above the runtime's `max_deliveries`: the runtime
/// dead-letters first, with its reason; the broker's limit is the backstop for a consumer that
/// never gets that far (one that crashes before it can even dead-letter).
const BROKER_MARGIN: u32 = 5;

impl SourceSettings {
    /// Sets the arguments a quorum queue gets when the source creates it: `x-delivery-limit`
    /// a bit above `max_deliveries`, and, past it, dead-lettering at least once to the
    /// source's dead-letter queue. Arguments set in `queue_arguments` are kept as they are.
    pub(crate) fn limit_deliveries(&mut self, max_deliveries: u32) {
        let mut extra = FieldTable::default();
        let args = &self.queue.arguments;
        let quorum = matches!(
            args.inner().get("x-queue-type"),
            Some(AMQPValue::LongString(t)) if t.to_string() == "quorum"
        );
        if !quorum {
            self.created_with = extra;
            return;
        }
        let text = |s: &str| AMQPValue::LongString(s.into());
        if !args.contains_key("x-delivery-limit") {
            let limit = max_deliveries.saturating_add(BROKER_MARGIN);
            let limit = i32::try_from(limit).unwrap_or(i32::MAX);
            extra.insert("x-delivery-limit".into(), AMQPValue::LongInt(limit));
        }
        if let Some(dlq) = &self.dead_letter_queue
            && !args.contains_key("x-dead-letter-exchange")
        {
            extra.insert("x-dead-letter-exchange".into(), text(""));
            extra.insert("x-dead-letter-routing-key".into(), text(&dlq.name));
            if !args.contains_key("x-dead-letter-strategy") && !args.contains_key("x-overflow") {
                extra.insert("x-dead-letter-strategy".into(), text("at-least-once"));
                extra.insert("x-overflow".into(), text("reject-publish"));
            }
        }
        self.created_with = extra;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(extra: &str) -> SourceSettings {
        let text = format!("urls = [\"amqp://127.0.0.1\"]\nqueue = \"orders\"\n{extra}");
        let config: crate::AmqpSourceConfig = toml::from_str(&text).unwrap();
        SourceSettings::try_from(config).unwrap()
    }

    #[test]
    fn a_quorum_queue_is_created_with_a_limit_above_max_deliveries_and_a_target() {
        let mut s = settings("queue_type = \"quorum\"");
        let arg = |s: &SourceSettings, k: &str| s.created_with.inner().get(k).cloned();
        assert_eq!(arg(&s, "x-delivery-limit"), Some(AMQPValue::LongInt(25)));
        s.limit_deliveries(3);
        assert_eq!(arg(&s, "x-delivery-limit"), Some(AMQPValue::LongInt(8)));
        let text = |v: &str| Some(AMQPValue::LongString(v.into()));
        assert_eq!(arg(&s, "x-dead-letter-exchange"), text(""));
        assert_eq!(arg(&s, "x-dead-letter-routing-key"), text("orders.dlq"));
        assert_eq!(arg(&s, "x-dead-letter-strategy"), text("at-least-once"));
        assert!(
            settings("").created_with.inner().is_empty(),
            "classic: nothing"
        );
        let own =
            settings("queue_type = \"quorum\"\nqueue_arguments = { \"x-delivery-limit\" = 4 }");
        assert_eq!(
            arg(&own, "x-delivery-limit"),
            None,
            "the user's own limit stays"
        );
    }
}
