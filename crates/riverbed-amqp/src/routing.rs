//! Routing-key templates for publishing: the core's [`Template`] with AMQP's length limit.

use std::str::FromStr;

use riverbed_core::{Message, Template};

/// A routing key computed per message: `orders.{key}`, `{subject}`, `audit`...
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RoutingKey(Template);

impl FromStr for RoutingKey {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        s.parse().map(RoutingKey)
    }
}

impl RoutingKey {
    /// The routing key of `m`, or why there is none.
    pub fn render(&self, m: &Message) -> Result<String, String> {
        let out = self.0.render(m, "the routing key")?;
        if out.len() > 255 {
            return Err(format!(
                "routing key is {} bytes long (255 at most)",
                out.len()
            ));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_keys_are_at_most_255_bytes() {
        let t: RoutingKey = "orders.{key}".parse().unwrap();
        assert_eq!(
            t.render(&Message::new("x").with_key("42")).unwrap(),
            "orders.42"
        );
        let long = Message::new("x").with_key("k".repeat(250));
        assert!(t.render(&long).unwrap_err().contains("255 at most"));
    }
}
