//! Subject templates for publishing: fixed text with `{key}` and `{subject}` placeholders.

use std::str::FromStr;

use riverbed_core::Message;

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Key,
    Subject,
}

/// A subject computed per message: `orders.{key}`, `{subject}`, `audit`...
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SubjectTemplate(Vec<Part>);

impl FromStr for SubjectTemplate {
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
        if parts.is_empty() {
            return Err("must not be empty".into());
        }
        if s.contains(['*', '>']) || s.contains(char::is_whitespace) {
            return Err(format!(
                "`{s}` may not contain wildcards or whitespace: one publishes to a subject"
            ));
        }
        Ok(SubjectTemplate(parts))
    }
}

impl SubjectTemplate {
    /// The subject of `m`, or why there is none.
    pub fn render(&self, m: &Message) -> Result<String, String> {
        let mut out = String::new();
        for p in &self.0 {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Key => out.push_str(
                    m.key
                        .as_deref()
                        .ok_or("the subject needs the message key, and it has none")?,
                ),
                Part::Subject => out.push_str(
                    m.meta
                        .subject
                        .as_deref()
                        .ok_or("the subject needs the message's subject, and it has none")?,
                ),
            }
        }
        if out.is_empty()
            || out.split('.').any(str::is_empty)
            || out.contains(['*', '>'])
            || out.contains(char::is_whitespace)
        {
            return Err(format!(
                "`{out}` is not a subject to publish to (dot-separated tokens, no wildcards or \
                 whitespace)"
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
        let t: SubjectTemplate = "orders.{key}".parse().unwrap();
        let m = Message::new("x").with_key("42");
        assert_eq!(t.render(&m).unwrap(), "orders.42");
        assert!(t.render(&Message::new("x")).is_err());
        assert!(
            t.render(&Message::new("x").with_key("a b")).is_err(),
            "a key with a space makes no subject"
        );
        let fixed: SubjectTemplate = "audit".parse().unwrap();
        assert_eq!(fixed.render(&m).unwrap(), "audit");
        let mut s = Message::new("x");
        s.meta.subject = Some("a.b".into());
        let subj: SubjectTemplate = "{subject}.copy".parse().unwrap();
        assert_eq!(subj.render(&s).unwrap(), "a.b.copy");
        assert!("{nope}".parse::<SubjectTemplate>().is_err());
        assert!("a{key".parse::<SubjectTemplate>().is_err());
        assert!("a}".parse::<SubjectTemplate>().is_err());
        assert!("orders.*".parse::<SubjectTemplate>().is_err());
    }
}
