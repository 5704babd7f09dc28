//! Subject templates for publishing: the core's [`Template`] with NATS's subject rules.

use std::str::FromStr;

use riverbed_core::{Message, Template};

/// A subject computed per message: `orders.{key}`, `{subject}`, `audit`...
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SubjectTemplate(Template);

impl FromStr for SubjectTemplate {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let template: Template = s.parse()?;
        if template.is_empty() {
            return Err("must not be empty".into());
        }
        if s.contains(['*', '>']) || s.contains(char::is_whitespace) {
            return Err(format!(
                "`{s}` may not contain wildcards or whitespace: one publishes to a subject"
            ));
        }
        Ok(SubjectTemplate(template))
    }
}

impl SubjectTemplate {
    /// The subject of `m`, or why there is none.
    pub fn render(&self, m: &Message) -> Result<String, String> {
        let out = self.0.render(m, "the subject")?;
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
        assert!("".parse::<SubjectTemplate>().is_err());
        assert!("orders.*".parse::<SubjectTemplate>().is_err());
    }
}
