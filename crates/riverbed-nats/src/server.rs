//! Server URLs that keep their credentials out of logs and `Debug` output.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

/// A `nats://` (or `tls://`) server URL. `Display` and `Debug` print it without user name and
/// password (`nats://***@host:4222`), so it can be logged as is.
#[derive(Clone, PartialEq, Eq)]
pub struct ServerUrl {
    url: url::Url,
    redacted: String,
}

impl ServerUrl {
    /// The URL, credentials included: hand it to the client, never to a log.
    pub fn as_str(&self) -> &str {
        self.url.as_str()
    }

    /// The URL without credentials.
    pub fn redacted(&self) -> &str {
        &self.redacted
    }
}

impl FromStr for ServerUrl {
    type Err = String;

    /// Parses a URL; the error never repeats the URL (it may hold a password).
    fn from_str(s: &str) -> Result<Self, String> {
        let url = url::Url::parse(s)
            .map_err(|e| format!("not a valid nats:// url ({e}; expected nats://host:4222)"))?;
        if !matches!(url.scheme(), "nats" | "tls") {
            return Err(format!(
                "scheme `{}` is not nats:// or tls://",
                url.scheme()
            ));
        }
        let Some(host) = url.host_str() else {
            return Err("the url has no host".into());
        };
        let credentials = if url.username().is_empty() && url.password().is_none() {
            ""
        } else {
            "***@"
        };
        let port = url.port().unwrap_or(4222);
        let redacted = format!("{}://{credentials}{host}:{port}", url.scheme());
        Ok(ServerUrl { url, redacted })
    }
}

impl fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

impl fmt::Debug for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServerUrl({})", self.redacted)
    }
}

impl<'de> Deserialize<'de> for ServerUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_show() {
        let u: ServerUrl = "nats://riverbed:s3cret@10.0.0.1:4223".parse().unwrap();
        assert_eq!(u.to_string(), "nats://***@10.0.0.1:4223");
        assert!(!format!("{u:?}").contains("s3cret"));
        assert!(u.as_str().contains("s3cret"), "the client still gets them");
        let err = "http://a:s3cret@x".parse::<ServerUrl>().unwrap_err();
        assert!(!err.contains("s3cret"), "{err}");
    }
}
