//! A connection URL that keeps its password out of logs and `Debug` output, shared by every
//! connector that takes one (PostgreSQL, Redis...).

use std::fmt;

use serde::{Deserialize, Deserializer};

/// A connection URL such as `postgres://user:secret@host:5432/db`. `Display` and `Debug` show
/// it with user name and password replaced by `***`; only [`DatabaseUrl::expose`] gives the
/// real text.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// Wraps a URL.
    pub fn new(url: impl Into<String>) -> Self {
        DatabaseUrl(url.into())
    }

    /// The URL with its password, for the driver only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any user name and password replaced by `***`.
    pub fn redacted(&self) -> String {
        crate::redact::url(&self.0)
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({:?})", self.redacted())
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl<'de> Deserialize<'de> for DatabaseUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(DatabaseUrl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        let u = DatabaseUrl::new("postgres://app:s3cr%40t@db:5432/ledger?sslmode=require");
        assert_eq!(
            u.to_string(),
            "postgres://***@db:5432/ledger?sslmode=require"
        );
        assert!(!format!("{u:?}").contains("s3cr"));
    }

    #[test]
    fn passwords_with_url_delimiters_never_show_in_part() {
        for c in ["#", "/", "?", "@", "%"] {
            for scheme in ["postgres", "redis", "rediss"] {
                let url = format!("{scheme}://app:hunter{c}2@db.example:5432/x");
                let shown = DatabaseUrl::new(&url).to_string();
                assert!(!shown.contains("hunter"), "{url} shown as {shown}");
                assert!(!shown.contains("2@"), "{url} shown as {shown}");
            }
        }
    }
}
