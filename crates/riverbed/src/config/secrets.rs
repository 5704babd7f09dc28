//! Secrets kept out of pipeline files: `${VAR}` / `${VAR:-default}` in any string value, and
//! `url_file` / `urls_file` read from a file (a Docker or Kubernetes secret). What they bring
//! in is remembered, so no error ever quotes it.

use std::borrow::Cow;
use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::load::ConfigError;

/// Keys whose value is read from a file: `(file key, key it provides, one value per line)`.
const FILE_KEYS: &[(&str, &str, bool)] = &[("url_file", "url", false), ("urls_file", "urls", true)];

/// Values that came from the environment or from secret files; errors are scrubbed of them.
#[derive(Debug, Default)]
pub struct Secrets(Vec<String>);

impl Secrets {
    /// `e` with every remembered value (three characters or more) replaced by `***`.
    pub fn scrub(&self, mut e: ConfigError) -> ConfigError {
        e.message = self.hide(&e.message);
        e.snippet = e.snippet.map(|s| self.hide(&s));
        e
    }

    /// `text` with every remembered value (three characters or more) replaced by `***`.
    pub fn hide(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for secret in self.0.iter().filter(|s| s.chars().count() >= 3) {
            out = out.replace(secret.as_str(), "***");
        }
        out
    }

    fn remember(&mut self, value: &str) {
        if !value.is_empty() && !self.0.iter().any(|s| s == value) {
            self.0.push(value.to_owned());
        }
    }
}

/// Expands variables in every string of `table` (keys stay as written), then replaces each
/// `*_file` key by the key it provides, read from the named file.
pub fn resolve(
    text: &str,
    table: &mut DeTable<'_>,
    secrets: &mut Secrets,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    for (_, value) in table.iter_mut() {
        resolve_value(text, value, secrets, env)?;
    }
    read_files(text, table, secrets)
}

fn resolve_value(
    text: &str,
    value: &mut Spanned<DeValue<'_>>,
    secrets: &mut Secrets,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    let span = value.span();
    match value.get_mut() {
        DeValue::String(s) if s.contains('$') => {
            let expanded = expand(s, env, secrets).map_err(|m| ConfigError::at(text, span, m))?;
            *s = Cow::Owned(expanded);
        }
        DeValue::Array(items) => {
            for item in items.iter_mut() {
                resolve_value(text, item, secrets, env)?;
            }
        }
        DeValue::Table(t) => resolve(text, t, secrets, env)?,
        _ => {}
    }
    Ok(())
}

/// `s` with `${VAR}` and `${VAR:-default}` replaced (the default when `VAR` is unset or
/// empty) and `$${` written as `${`. The error names the variable, never a value.
pub fn expand(
    s: &str,
    env: &dyn Fn(&str) -> Option<String>,
    secrets: &mut Secrets,
) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let end = tail
                .find('}')
                .ok_or("`${` without a closing `}` (write `$${` for a literal `${`)")?;
            out.push_str(&variable(&tail[..end], env, secrets)?);
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The value of `NAME` or `NAME:-default`.
fn variable(
    inner: &str,
    env: &dyn Fn(&str) -> Option<String>,
    secrets: &mut Secrets,
) -> Result<String, String> {
    let (name, default) = match inner.split_once(":-") {
        Some((n, d)) => (n, Some(d)),
        None => (inner, None),
    };
    let valid = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(format!(
            "`${{{name}}}`: a variable name is letters, digits and `_`"
        ));
    }
    match (env(name).filter(|v| !v.is_empty()), default) {
        (Some(v), _) => {
            secrets.remember(&v);
            Ok(v)
        }
        (None, Some(d)) => Ok(d.to_owned()),
        (None, None) => Err(format!(
            "environment variable `{name}` is not set (write `${{{name}:-default}}` for a default)"
        )),
    }
}

/// Replaces `url_file = "/path"` by `url = "<the file's text>"` (trailing white space cut).
fn read_files(
    text: &str,
    table: &mut DeTable<'_>,
    secrets: &mut Secrets,
) -> Result<(), ConfigError> {
    for (file_key, key, per_line) in FILE_KEYS {
        let Some(k) = table.keys().find(|k| k.get_ref() == *file_key).cloned() else {
            continue;
        };
        let path = table.remove(&k).expect("key found above");
        let span = path.span();
        if table.keys().any(|k| k.get_ref() == *key) {
            return Err(ConfigError::at(
                text,
                span,
                format!("`{file_key}` and `{key}` are both set: keep one"),
            ));
        }
        let content = read(text, &path, file_key)?;
        secrets.remember(&content);
        let value = if *per_line {
            let lines = content.lines().map(str::trim).filter(|l| !l.is_empty());
            DeValue::Array(
                lines
                    .map(|l| Spanned::new(span.clone(), DeValue::String(l.to_owned().into())))
                    .collect(),
            )
        } else {
            DeValue::String(content.into())
        };
        table.insert(
            Spanned::new(k.span(), Cow::Borrowed(*key)),
            Spanned::new(span, value),
        );
    }
    Ok(())
}

/// The text of the file named by `path` (a string value), without trailing white space.
fn read(text: &str, path: &Spanned<DeValue<'_>>, file_key: &str) -> Result<String, ConfigError> {
    let span: Range<usize> = path.span();
    let Some(p) = path.get_ref().as_str() else {
        return Err(ConfigError::at(
            text,
            span,
            format!("`{file_key}` must be a file path"),
        ));
    };
    match std::fs::read_to_string(p) {
        Ok(s) => Ok(s.trim_end().to_owned()),
        Err(e) => Err(ConfigError::at(
            text,
            span,
            format!("`{file_key}`: cannot read {p}: {e}"),
        )),
    }
}
