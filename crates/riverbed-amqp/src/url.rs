//! Broker URLs that keep their credentials out of logs and `Debug` output.

use std::fmt;
use std::str::FromStr;

use lapin::uri::{AMQPScheme, AMQPUri};
use serde::{Deserialize, Deserializer};

/// An `amqp://` or `amqps://` URL. `Display` and `Debug` print it without user name and
/// password (`amqp://***@host:5672/%2f`, see [`riverbed_core::redact::url`]), so it can be
/// logged as is.
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    uri: AMQPUri,
    redacted: String,
}

impl BrokerUrl {
    /// The parsed URL, credentials included: hand it to the client, never to a log.
    pub fn uri(&self) -> &AMQPUri {
        &self.uri
    }

    /// The URL without credentials.
    pub fn redacted(&self) -> &str {
        &self.redacted
    }

    /// Whether it is an `amqps://` URL.
    pub fn is_tls(&self) -> bool {
        self.uri.scheme == AMQPScheme::AMQPS
    }
}

impl FromStr for BrokerUrl {
    type Err = String;

    /// Parses a URL; the error never repeats the URL (it may hold a password).
    fn from_str(s: &str) -> Result<Self, String> {
        let mut uri: AMQPUri = s.parse().map_err(|_| {
            "not a valid amqp:// or amqps:// url (expected amqp://user:password@host:port/vhost)"
                .to_owned()
        })?;
        // The parser keeps only domain names and falls back to `localhost` for IP addresses.
        if let Some(ip) = ip_host(s) {
            uri.authority.host = ip;
        }
        let redacted = riverbed_core::redact::url(s);
        Ok(BrokerUrl { uri, redacted })
    }
}

/// The host of `s` when it is an IP address literal (`url` keeps the hosts of non-special
/// schemes such as `amqp` opaque, so an IPv4 address comes back as a domain).
fn ip_host(s: &str) -> Option<String> {
    let ip: std::net::IpAddr = match url::Url::parse(s).ok()?.host()? {
        url::Host::Ipv4(ip) => ip.into(),
        url::Host::Ipv6(ip) => ip.into(),
        url::Host::Domain(d) => d.parse().ok()?,
    };
    Some(ip.to_string())
}

impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

impl fmt::Debug for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BrokerUrl({})", self.redacted)
    }
}

impl<'de> Deserialize<'de> for BrokerUrl {
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
        let u: BrokerUrl = "amqp://alice:s3cret@broker.example:5673/prod"
            .parse()
            .unwrap();
        for shown in [u.to_string(), format!("{u:?}")] {
            assert!(!shown.contains("s3cret"), "{shown}");
            assert!(!shown.contains("alice"), "{shown}");
            assert!(shown.contains("broker.example:5673"), "{shown}");
        }
        assert_eq!(u.uri().authority.userinfo.password, "s3cret");
        let plain: BrokerUrl = "amqp://localhost".parse().unwrap();
        assert_eq!(plain.to_string(), "amqp://localhost");
        let ip: BrokerUrl = "amqp://guest:guest@127.0.0.1:5672/%2f".parse().unwrap();
        assert_eq!(ip.uri().authority.host, "127.0.0.1");
        assert_eq!(ip.to_string(), "amqp://***@127.0.0.1:5672/%2f");
        let v6: BrokerUrl = "amqp://[::1]:5672/%2f".parse().unwrap();
        assert_eq!(v6.uri().authority.host, "::1");
    }

    #[test]
    fn passwords_with_url_delimiters_never_show_in_part() {
        for c in ["#", "/", "?", "@", "%"] {
            for scheme in ["amqp", "amqps"] {
                let url = format!("{scheme}://app:hunter{c}2@127.0.0.1:5672/%2f");
                let shown = match url.parse::<BrokerUrl>() {
                    Ok(u) => format!("{u} {u:?}"),
                    Err(e) => e,
                };
                assert!(!shown.contains("hunter"), "{url} shown as {shown}");
                assert!(!shown.contains("2@"), "{url} shown as {shown}");
            }
        }
    }

    #[test]
    fn parse_errors_do_not_echo_the_url() {
        let err = "http//bob:hunter2@".parse::<BrokerUrl>().unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
    }
}
