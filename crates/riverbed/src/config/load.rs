//! Reading a pipeline file: TOML with spans kept, so every error names its line and field.
//!
//! Sections chosen by `kind` (source, processors, sinks, dead_letter) are rewritten before
//! deserialising, from `{kind = "sqlite", path = ...}` to `{kind = {sqlite = {path = ...}}}`:
//! serde then reads them as plain enums, without buffering, and every error keeps the exact
//! position of the offending value.

use std::fmt;
use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue, Deserializer};

use super::raw::RawConfig;
use super::secrets::Secrets;

/// A configuration error, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// What is wrong, naming the field.
    pub message: String,
    /// The offending line's text.
    pub snippet: Option<String>,
}

impl ConfigError {
    /// An error at byte range `span` of `text` (a `0..0` span has no position).
    pub fn at(text: &str, span: Range<usize>, message: impl Into<String>) -> Self {
        if span == (0..0) {
            return ConfigError {
                line: None,
                column: None,
                message: riverbed_core::redact::urls_in(&message.into()),
                snippet: None,
            };
        }
        let start = span.start.min(text.len());
        let before = &text[..start];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
        let column = text[line_start..start].chars().count() + 1;
        let snippet = text[line_start..].lines().next().map(redact_credentials);
        ConfigError {
            line: Some(line),
            column: Some(column),
            message: riverbed_core::redact::urls_in(&message.into()),
            snippet,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "line {l}, column {c}: {}", self.message)?,
            _ => write!(f, "{}", self.message)?,
        }
        if let (Some(s), Some(c)) = (&self.snippet, self.column) {
            write!(f, "\n  | {s}\n  | {}^", " ".repeat(c.saturating_sub(1)))?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Hides the credentials of every URL in a line, so an error quoting it leaks no secret.
pub fn redact_credentials(line: &str) -> String {
    riverbed_core::redact::urls_in(line)
}

/// A section chosen by `kind`: its name, the keys that stay outside the kind-specific part
/// (`None`: the section itself becomes the enum), and the kinds (for error messages).
struct Tagged {
    section: &'static str,
    common: Option<&'static [&'static str]>,
    kinds: &'static [&'static str],
}

const TAGGED: &[Tagged] = &[
    Tagged {
        section: "source",
        common: None,
        kinds: &["amqp", "embedded", "generate"],
    },
    Tagged {
        section: "dead_letter",
        common: None,
        kinds: &["amqp", "embedded", "file", "log"],
    },
    Tagged {
        section: "processors",
        common: Some(&["name"]),
        kinds: &["aggregate", "filter"],
    },
    Tagged {
        section: "sinks",
        common: Some(&["name", "input", "batch"]),
        kinds: &[
            "sqlite",
            "postgres",
            "redis_hash_incr",
            "redis_latest",
            "amqp",
            "nats",
            "http",
            "stdout",
            "file",
            "noop",
        ],
    },
    Tagged {
        section: "tasks",
        common: Some(&["name"]),
        kinds: &["window_counter", "reconcile"],
    },
];

/// Parses `text` into the raw configuration, expanding variables with `env` and reading
/// `*_file` keys (see [`super::secrets`]); what they brought in is added to `secrets`.
pub fn parse(
    text: &str,
    secrets: &mut Secrets,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<RawConfig, ConfigError> {
    let mut root = DeTable::parse(text).map_err(|e| toml_error(text, e))?;
    super::secrets::resolve(text, root.get_mut(), secrets, env)?;
    for Tagged {
        section,
        common,
        kinds,
    } in TAGGED
    {
        let Some(value) = root.get_mut().get_mut(*section) else {
            continue;
        };
        let span = value.span();
        match value.get_mut() {
            DeValue::Array(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    retag(text, item, &format!("{section}[{i}]"), *common, kinds)?;
                }
            }
            DeValue::Table(_) if common.is_none() => retag(text, value, section, None, kinds)?,
            _ => {
                let how = if common.is_some() {
                    format!("[[{section}]] entries")
                } else {
                    format!("a [{section}] table")
                };
                return Err(ConfigError::at(
                    text,
                    span,
                    format!("`{section}` must be {how}"),
                ));
            }
        }
    }
    RawConfig::deserialize(Deserializer::from(root)).map_err(|e| toml_error(text, e))
}

fn toml_error(text: &str, e: toml::de::Error) -> ConfigError {
    ConfigError::at(
        text,
        e.span().unwrap_or(0..0),
        e.message().trim().to_owned(),
    )
}

/// Moves everything but the common keys of a table under `kind = {<kind> = {...}}` (or makes
/// the table `{<kind> = {...}}` when there are no common keys).
fn retag(
    text: &str,
    value: &mut Spanned<DeValue<'_>>,
    path: &str,
    common: Option<&[&str]>,
    kinds: &[&str],
) -> Result<(), ConfigError> {
    let span = value.span();
    let DeValue::Table(table) = value.get_mut() else {
        return Err(ConfigError::at(
            text,
            span,
            format!("`{path}` must be a table"),
        ));
    };
    let kind_key = table.keys().find(|k| k.get_ref() == "kind").cloned();
    let Some(kind_key) = kind_key else {
        return Err(ConfigError::at(
            text,
            span,
            format!("`{path}` needs `kind`, one of: {}", kinds.join(", ")),
        ));
    };
    let kind = table.remove(&kind_key).expect("key found above");
    let Some(name) = kind.get_ref().as_str().map(str::to_owned) else {
        return Err(ConfigError::at(
            text,
            kind.span(),
            format!(
                "`{path}.kind` must be a string, one of: {}",
                kinds.join(", ")
            ),
        ));
    };
    let mut rest = std::mem::take(table);
    let mut outer = DeTable::default();
    for key in common.unwrap_or(&[]) {
        if let Some(k) = rest.keys().find(|k| k.get_ref() == *key).cloned() {
            let v = rest.remove(&k).expect("key found above");
            outer.insert(k, v);
        }
    }
    let mut inner = DeTable::default();
    inner.insert(
        Spanned::new(kind.span(), name.into()),
        Spanned::new(span.clone(), DeValue::Table(rest)),
    );
    match common {
        None => *table = inner,
        Some(_) => {
            outer.insert(kind_key, Spanned::new(kind.span(), DeValue::Table(inner)));
            *table = outer;
        }
    }
    Ok(())
}
