//! Parse, don't validate: the raw configuration becomes checked settings in one place.

use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use reqwest::Method;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use riverbed_core::Template;
use riverbed_core::breaker::BreakerPolicy;

use crate::config::{BodyFormat, BreakerConfig, HttpSinkConfig};
use crate::error::{Error, Result, config};
use crate::field::FieldRef;

/// The methods a sink may use.
pub(crate) const METHODS: [&str; 4] = ["POST", "PUT", "PATCH", "DELETE"];

/// Which method each request uses.
#[derive(Debug, Clone)]
pub(crate) enum MethodSpec {
    Fixed(Method),
    From(FieldRef),
}

/// How requests that fail for now are retried within one write.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RetrySettings {
    pub retries: u32,
    pub backoff: Duration,
    pub max_backoff: Duration,
    pub max_retry_after: Duration,
}

/// The checked configuration.
#[derive(Debug)]
pub(crate) struct Settings {
    pub url: Template,
    /// The URL's origin, credentials hidden: the breaker's endpoint and the logs' name for it.
    pub endpoint: String,
    pub method: MethodSpec,
    pub headers: HeaderMap,
    pub header_fields: Vec<(HeaderName, FieldRef)>,
    pub body: BodyFormat,
    pub content_type: HeaderValue,
    pub idempotency_key: bool,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub retry: RetrySettings,
    pub concurrency: NonZeroUsize,
    pub breaker: BreakerPolicy,
}

impl TryFrom<HttpSinkConfig> for Settings {
    type Error = Error;

    fn try_from(c: HttpSinkConfig) -> Result<Self> {
        let (url, endpoint) = check_url(&c.url)?;
        let method = match &c.method_from {
            Some(f) => MethodSpec::From(f.parse().map_err(|e| config("method_from", e))?),
            None => MethodSpec::Fixed(method(&c.method).map_err(|e| config("method", e))?),
        };
        let mut headers = HeaderMap::new();
        for (name, value) in &c.headers.0 {
            let n = header_name(name, "headers")?;
            // The value is never quoted: it may be a secret.
            let mut v = HeaderValue::from_str(value).map_err(|_| {
                config(
                    "headers",
                    format!("`{name}` has a value that is not a header value"),
                )
            })?;
            v.set_sensitive(true);
            headers.insert(n, v);
        }
        let mut header_fields = Vec::new();
        for (name, field) in &c.header_fields {
            let f = field.parse().map_err(|e| config("header_fields", e))?;
            header_fields.push((header_name(name, "header_fields")?, f));
        }
        let default_type = match c.body {
            BodyFormat::Ndjson => "application/x-ndjson",
            BodyFormat::Message | BodyFormat::JsonArray => "application/json",
        };
        let content_type = c.content_type.as_deref().unwrap_or(default_type);
        let content_type = HeaderValue::from_str(content_type)
            .map_err(|_| config("content_type", "is not a header value"))?;
        Ok(Settings {
            url,
            endpoint,
            method,
            headers,
            header_fields,
            body: c.body,
            content_type,
            idempotency_key: c.idempotency_key,
            timeout: nonzero_time(c.timeout, "timeout")?,
            connect_timeout: nonzero_time(c.connect_timeout, "connect_timeout")?,
            retry: RetrySettings {
                retries: c.retries,
                backoff: c.retry_backoff,
                max_backoff: c.retry_max_backoff.max(c.retry_backoff),
                max_retry_after: c.max_retry_after,
            },
            concurrency: NonZeroUsize::new(c.concurrency)
                .ok_or_else(|| config("concurrency", "must be at least 1"))?,
            breaker: breaker(&c.breaker)?,
        })
    }
}

fn nonzero_time(d: Duration, field: &str) -> Result<Duration> {
    if d.is_zero() {
        return Err(config(field, "must be longer than zero"));
    }
    Ok(d)
}

/// A method by name, one of [`METHODS`].
pub(crate) fn method(name: &str) -> Result<Method, String> {
    if !METHODS.contains(&name) {
        return Err(format!(
            "`{name}` is not a method to send messages with (one of: {})",
            METHODS.join(", ")
        ));
    }
    Method::from_bytes(name.as_bytes()).map_err(|e| e.to_string())
}

fn header_name(name: &str, field: &str) -> Result<HeaderName> {
    HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| config(field, format!("`{name}` is not a header name")))
}

/// The URL template, checked: placeholders only after the origin (one breaker guards one
/// endpoint), and an http or https URL once they are filled in.
fn check_url(raw: &str) -> Result<(Template, String)> {
    let template: Template = raw.parse().map_err(|e| config("url", e))?;
    let redacted = riverbed_core::redact::url(&raw.replace(['{', '}'], ""));
    let Some(scheme_end) = raw.find("://") else {
        return Err(config("url", format!("`{redacted}` is not an http(s) URL")));
    };
    let rest = &raw[scheme_end + 3..];
    let origin_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    if rest[..origin_len].contains('{') {
        return Err(config(
            "url",
            "may have placeholders only in its path and query (the circuit breaker guards one \
             endpoint)",
        ));
    }
    let sample = raw.replace("{key}", "k").replace("{subject}", "s");
    let parsed = url::Url::parse(&sample)
        .map_err(|e| config("url", format!("`{redacted}` does not parse: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(config("url", format!("`{redacted}` is not an http(s) URL")));
    }
    let origin = riverbed_core::redact::url(&raw[..scheme_end + 3 + origin_len]);
    Ok((template, origin.trim_end_matches('/').to_owned()))
}

fn breaker(c: &BreakerConfig) -> Result<BreakerPolicy> {
    let nonzero = |v: u32, field: &str| {
        NonZeroU32::new(v).ok_or_else(|| config(&format!("breaker.{field}"), "must be at least 1"))
    };
    let policy = BreakerPolicy {
        failure_ratio: c.failure_ratio,
        window: nonzero(c.window, "window")?,
        minimum_calls: nonzero(c.minimum_calls, "minimum_calls")?,
        open_for: c.open_for,
        half_open_probes: nonzero(c.half_open_probes, "half_open_probes")?,
    };
    policy.check().map_err(|e| config("breaker", e))?;
    Ok(policy)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(c: HttpSinkConfig) -> String {
        Settings::try_from(c).unwrap_err().to_string()
    }

    #[test]
    fn http_settings_refuse_bad_fields() {
        let ok = Settings::try_from(HttpSinkConfig::new("http://u:pw@h:8080/a/{key}?x=1")).unwrap();
        assert_eq!(ok.endpoint, "http://***@h:8080");
        let e = refused(HttpSinkConfig::new("http://{key}.example/a"));
        assert!(e.contains("`url`") && e.contains("path and query"), "{e}");
        assert!(refused(HttpSinkConfig::new("ftp://h/a")).contains("http(s)"));
        assert!(refused(HttpSinkConfig::new("http://h/{nope}")).contains("placeholder"));
        let mut c = HttpSinkConfig::new("http://h/");
        c.method = "GET".into();
        assert!(refused(c).contains("`method`"));
        let mut c = HttpSinkConfig::new("http://h/");
        c.breaker.failure_ratio = 2.0;
        assert!(refused(c).contains("failure_ratio"));
        let mut c = HttpSinkConfig::new("http://h/");
        c.header_fields.insert("X-T".into(), "tenant".into());
        assert!(refused(c).contains("`header_fields`"));
        let mut c = HttpSinkConfig::new("http://h/");
        c.headers
            .0
            .insert("Authorization".into(), "Bearer s3cr\u{7}t".into());
        let e = refused(c);
        assert!(!e.contains("s3cr"), "a header value is never quoted: {e}");
    }
}
