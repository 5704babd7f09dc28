//! Which answers are the message's fault, which are worth retrying and which mean the
//! endpoint cannot be reached: the one place that decides (a `RetryLogic`, as Vector calls it).

use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use riverbed_core::Failure;

/// How much of a refusing response's body a dead letter quotes.
pub(crate) const BODY_EXCERPT: usize = 512;

/// What one request came to.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Verdict {
    /// 2xx: delivered.
    Delivered,
    /// Worth another try (5xx, 408, 429, a timeout, a connection lost mid-request), after
    /// the delay the server asked for, if it did.
    Retry {
        /// What failed.
        error: String,
        /// `Retry-After`, when the server sent one.
        after: Option<Duration>,
    },
    /// The message is refused for good (4xx other than 408 and 429, or a redirect): dead
    /// letter with the status and an excerpt of the body.
    Refused(Failure),
    /// The endpoint cannot be reached (connection refused, DNS, TLS handshake).
    Unreachable(String),
}

impl Verdict {
    /// True when the call counts against the endpoint in its circuit breaker.
    pub fn is_endpoint_failure(&self) -> bool {
        matches!(self, Verdict::Retry { .. } | Verdict::Unreachable(_))
    }
}

/// The verdict on a response with `status`, its headers and the start of its body.
pub(crate) fn response(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Verdict {
    if status.is_success() {
        return Verdict::Delivered;
    }
    let excerpt = excerpt(body);
    let error = if excerpt.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {excerpt}")
    };
    let retryable = status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS;
    if retryable {
        return Verdict::Retry {
            error,
            after: retry_after(headers, SystemTime::now()),
        };
    }
    let reason = if status.is_redirection() {
        "http_redirect"
    } else {
        "http_rejected"
    };
    Verdict::Refused(Failure::new(reason, error))
}

/// The verdict on a request that got no response.
pub(crate) fn error(e: &reqwest::Error) -> Verdict {
    // reqwest's text names the URL; the caller's context names the endpoint instead.
    let text = error_text(e);
    if e.is_connect() {
        Verdict::Unreachable(text)
    } else if e.is_timeout() {
        Verdict::Retry {
            error: format!("timed out: {text}"),
            after: None,
        }
    } else {
        Verdict::Retry {
            error: text,
            after: None,
        }
    }
}

/// The error's text with its causes, without the URL (which may carry credentials).
fn error_text(e: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(url.as_str(), &riverbed_core::redact::url(url.as_str()));
    }
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    riverbed_core::redact::urls_in(&text)
}

/// The first [`BODY_EXCERPT`] bytes of `body` as text, on one line.
fn excerpt(body: &[u8]) -> String {
    let cut = &body[..body.len().min(BODY_EXCERPT)];
    let mut s = String::from_utf8_lossy(cut).replace(['\r', '\n'], " ");
    if body.len() > BODY_EXCERPT {
        s.push('…');
    }
    s.trim().to_owned()
}

/// `Retry-After` as a delay: seconds, or an HTTP date (a date in the past is no delay).
pub(crate) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = jiff::fmt::rfc2822::parse(v).ok()?;
    let at = SystemTime::from(at.timestamp());
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn with_retry_after(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn http_statuses_are_classified() {
        let none = HeaderMap::new();
        assert_eq!(response(StatusCode::OK, &none, b""), Verdict::Delivered);
        assert_eq!(
            response(StatusCode::ACCEPTED, &none, b""),
            Verdict::Delivered
        );
        for s in [500, 502, 503, 504, 408, 429] {
            let v = response(StatusCode::from_u16(s).unwrap(), &none, b"busy");
            assert!(matches!(v, Verdict::Retry { .. }), "{s}: {v:?}");
            assert!(v.is_endpoint_failure());
        }
        let v = response(
            StatusCode::BAD_REQUEST,
            &none,
            b"{\"error\":\n\"bad field\"}",
        );
        let Verdict::Refused(f) = &v else {
            panic!("{v:?}")
        };
        assert_eq!(f.reason, "http_rejected");
        assert_eq!(f.error, "HTTP 400 Bad Request: {\"error\": \"bad field\"}");
        assert!(!v.is_endpoint_failure(), "a 400 is the message's fault");
        let v = response(StatusCode::MOVED_PERMANENTLY, &none, b"");
        assert!(matches!(v, Verdict::Refused(f) if f.reason == "http_redirect"));
        let long = vec![b'x'; 2000];
        let Verdict::Refused(f) = response(StatusCode::UNPROCESSABLE_ENTITY, &none, &long) else {
            panic!()
        };
        assert!(f.error.chars().count() < BODY_EXCERPT + 40);
    }

    #[test]
    fn http_retry_after_in_seconds_or_as_a_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            retry_after(&with_retry_after("7"), now),
            Some(Duration::from_secs(7))
        );
        // 2023-11-14T22:13:20Z is 1_700_000_000; 30 s later:
        let date = with_retry_after("Tue, 14 Nov 2023 22:13:50 GMT");
        assert_eq!(retry_after(&date, now), Some(Duration::from_secs(30)));
        let past = with_retry_after("Tue, 14 Nov 2023 22:00:00 GMT");
        assert_eq!(retry_after(&past, now), Some(Duration::ZERO));
        assert_eq!(retry_after(&with_retry_after("soon"), now), None);
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }
}
