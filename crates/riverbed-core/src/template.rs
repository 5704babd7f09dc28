//! Per-message text templates for publishing (routing keys, subjects): fixed text with `{key}`
//! and `{subject}` placeholders.

use std::str::FromStr;

use crate::message::Message;

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Key,
    Subject,
}

/// Text computed per message: `orders.{key}`, `{subject}`, `audit`...
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(Vec<Part>);

impl FromStr for Template {
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
        Ok(Template(parts))
    }
}

impl Template {
    /// True when the template has no part at all (the empty string).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The text for `m`, or why there is none; `what` names the result in errors
    /// ("the routing key", "the subject").
    pub fn render(&self, m: &Message, what: &str) -> Result<String, String> {
        let mut out = String::new();
        for p in &self.0 {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Key => out.push_str(
                    m.key
                        .as_deref()
                        .ok_or_else(|| format!("{what} needs the message key, and it has none"))?,
                ),
                Part::Subject => out.push_str(m.meta.subject.as_deref().ok_or_else(|| {
                    format!("{what} needs the message's subject, and it has none")
                })?),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_templates_and_refuses_bad_ones() {
        let t: Template = "orders.{key}".parse().unwrap();
        let m = Message::new("x").with_key("42");
        assert_eq!(t.render(&m, "it").unwrap(), "orders.42");
        assert!(t.render(&Message::new("x"), "it").is_err());
        let fixed: Template = "audit".parse().unwrap();
        assert_eq!(fixed.render(&m, "it").unwrap(), "audit");
        let mut s = Message::new("x");
        s.meta.subject = Some("a.b".into());
        let subj: Template = "{subject}.copy".parse().unwrap();
        assert_eq!(subj.render(&s, "it").unwrap(), "a.b.copy");
        assert!("{nope}".parse::<Template>().is_err());
        assert!("a{key".parse::<Template>().is_err());
        assert!("a}".parse::<Template>().is_err());
        assert!("".parse::<Template>().unwrap().is_empty());
    }
}
