//! One request through the breaker, with its retries: the mechanism; `classify` decides.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::CONTENT_TYPE;
use riverbed_core::breaker::{BreakerState, CircuitBreaker};
use riverbed_core::{Backoff, Failure, Outcome};

use crate::classify::{self, BODY_EXCERPT, Verdict};
use crate::request::Call;
use crate::settings::Settings;

/// Sends calls to the endpoint.
pub(crate) struct Sender {
    sink: String,
    client: reqwest::Client,
    breaker: Arc<CircuitBreaker>,
    settings: Arc<Settings>,
}

impl Sender {
    pub fn new(
        sink: &str,
        client: reqwest::Client,
        breaker: Arc<CircuitBreaker>,
        settings: Arc<Settings>,
    ) -> Self {
        Sender {
            sink: sink.to_owned(),
            client,
            breaker,
            settings,
        }
    }

    pub fn breaker(&self) -> &Arc<CircuitBreaker> {
        &self.breaker
    }

    /// Sends `call` until it is delivered, refused, or out of retries (each retry after a
    /// backoff, or after the server's `Retry-After`, capped).
    pub async fn deliver(&self, call: &Call) -> Outcome {
        let retry = self.settings.retry;
        let mut backoff = Backoff::new(retry.backoff, retry.max_backoff);
        let mut tries = 0u32;
        loop {
            let (error, after) = match self.try_once(call).await {
                Ok(outcome) => return outcome,
                Err(retryable) => retryable,
            };
            tries += 1;
            if tries > retry.retries {
                let f = Failure::new("http_retryable", error);
                return Outcome::Transient(self.context(f, call));
            }
            let delay =
                after.map_or_else(|| backoff.next_delay(), |a| a.min(retry.max_retry_after));
            tracing::warn!(
                sink = %self.sink,
                endpoint = %self.settings.endpoint,
                retry = tries,
                delay_ms = delay.as_millis() as u64,
                retry_after = after.is_some(),
                error = %error,
                "HTTP request failed; retrying"
            );
            metrics::counter!("riverbed_http_retries_total", "sink" => self.sink.clone())
                .increment(1);
            tokio::time::sleep(delay).await;
        }
    }

    /// One try through the breaker: the final outcome, or the error (and `Retry-After`) of a
    /// try worth repeating. A failure that leaves the breaker open, or a breaker that is open,
    /// makes the outcome `Unavailable`: the endpoint is down, not the message at fault.
    async fn try_once(&self, call: &Call) -> Result<Outcome, (String, Option<Duration>)> {
        let permit = match self.breaker.try_acquire() {
            Ok(p) => p,
            Err(open) => {
                return Ok(Outcome::Unavailable(Failure::new(
                    "breaker_open",
                    open.to_string(),
                )));
            }
        };
        let verdict = self.send(call).await;
        let state = if verdict.is_endpoint_failure() {
            permit.failure()
        } else {
            permit.success()
        };
        match verdict {
            Verdict::Delivered => Ok(Outcome::Ok),
            Verdict::Refused(f) => Ok(Outcome::Permanent(self.context(f, call))),
            Verdict::Unreachable(e) => Ok(Outcome::Unavailable(
                self.context(Failure::unavailable(e), call),
            )),
            Verdict::Retry { error, .. } if state != BreakerState::Closed => {
                let f =
                    Failure::unavailable(format!("{error} (circuit breaker {})", state.as_str()));
                Ok(Outcome::Unavailable(self.context(f, call)))
            }
            Verdict::Retry { error, after } => Err((error, after)),
        }
    }

    /// The failure with the method and URL it happened on (credentials hidden).
    fn context(&self, f: Failure, call: &Call) -> Failure {
        let url = riverbed_core::redact::url(&call.target.url);
        Failure::new(
            f.reason,
            format!("{} {url}: {}", call.target.method, f.error),
        )
    }

    /// One request, and what it came to.
    async fn send(&self, call: &Call) -> Verdict {
        let s = &self.settings;
        let request = self
            .client
            .request(call.target.method.clone(), &call.target.url)
            .headers(s.headers.clone())
            .headers(call.target.headers.clone())
            .header(CONTENT_TYPE, s.content_type.clone())
            .body(call.body.clone());
        let started = std::time::Instant::now();
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => return classify::error(&e),
        };
        let status = response.status();
        let headers = response.headers().clone();
        let body = match read_start(response).await {
            Ok(b) => b,
            Err(e) if status.is_success() => {
                // Delivered: the status says so; an unfinished body does not change it.
                tracing::debug!(error = %e, "Response body not read to its end");
                Vec::new()
            }
            Err(e) => return classify::error(&e),
        };
        metrics::histogram!("riverbed_http_request_seconds", "sink" => self.sink.clone(), "status" => status.as_u16().to_string())
            .record(started.elapsed().as_secs_f64());
        classify::response(status, &headers, &body)
    }
}

/// The start of a response body (enough for a dead letter's excerpt); the rest is read and
/// dropped up to a limit, so the connection can be reused.
async fn read_start(mut response: reqwest::Response) -> Result<Vec<u8>, reqwest::Error> {
    const DRAIN: usize = 64 * 1024;
    let mut kept = Vec::new();
    let mut seen = 0usize;
    while let Some(chunk) = response.chunk().await? {
        seen += chunk.len();
        if kept.len() <= BODY_EXCERPT {
            kept.extend_from_slice(&chunk[..chunk.len().min(BODY_EXCERPT + 1 - kept.len())]);
        }
        if seen > DRAIN {
            break;
        }
    }
    Ok(kept)
}
