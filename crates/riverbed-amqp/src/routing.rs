//! Routing-key templates for publishing: fixed text with `{key}` and `{subject}` placeholders.

use std::str::FromStr;

use riverbed_core::Message;

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Key,
    Subject,
}

/// A routing key computed per message: `orders.{key}`, `{subject}`, `audit`...
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RoutingKey(Vec<Part>);

impl FromStr for RoutingKey {
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
                .ok_or_else(|| format!("`{s}` has an unclosed `{{`"))?;
            parts.push(match &rest[open + 1..open + close] {
                "key" => Part::Key,
                "subject" => Part::Subject,
                other => {
                    return Err(format!(
                        "`{{{other}}}` is not a placeholder (use `{{key}}` or `{{subject}}`)"
                    ));
                }
            });
            rest = &rest[open + close + 1..];
        }
        if rest.contains('}') {
            return Err(format!("`{s}` has a `}}` without `{{`"));
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(RoutingKey(parts))
    }
}

impl RoutingKey {
    /// The routing key of `m`, or why there is none.
    pub fn render(&self, m: &Message) -> Result<String, String> {
        let mut out = String::new();
        for p in &self.0 {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Key => out.push_str(
                    m.key
                        .as_deref()
                        .ok_or("the routing key needs the message key, and it has none")?,
                ),
                Part::Subject => out.push_str(
                    m.meta
                        .subject
                        .as_deref()
                        .ok_or("the routing key needs the message subject, and it has none")?,
                ),
            }
        }
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
    fn renders_templates() {
        let t: RoutingKey = "orders.{key}".parse().unwrap();
        let m = Message::new("x").with_key("42");
        assert_eq!(t.render(&m).unwrap(), "orders.42");
        assert!(t.render(&Message::new("x")).is_err());
        let fixed: RoutingKey = "audit".parse().unwrap();
        assert_eq!(fixed.render(&m).unwrap(), "audit");
        let mut s = Message::new("x");
        s.meta.subject = Some("a.b".into());
        let subj: RoutingKey = "{subject}.copy".parse().unwrap();
        assert_eq!(subj.render(&s).unwrap(), "a.b.copy");
        assert!("{nope}".parse::<RoutingKey>().is_err());
        assert!("a{key".parse::<RoutingKey>().is_err());
        assert!("a}".parse::<RoutingKey>().is_err());
    }
}
