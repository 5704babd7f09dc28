//! `HttpSink`: sends messages (one request each, or one per batch) through the endpoint's
//! circuit breaker, retrying what may succeed later and keeping per-key order.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use riverbed_core::breaker::{BreakerState, CircuitBreaker};
use riverbed_core::{BatchOutcome, Failure, Message, Outcome, Sink};

use crate::config::{BodyFormat, HttpSinkConfig};
use crate::error::{Error, Result};
use crate::request::{Call, call, plan};
use crate::send::Sender;
use crate::settings::Settings;

/// Posts messages to an HTTP endpoint.
///
/// Per request: 2xx → `Ok`; 5xx, 408, 429 and timeouts are retried (`retries` times, with
/// backoff, honouring `Retry-After`), then `Transient` (one attempt of the message used);
/// another 4xx or a redirect → `Permanent` (dead letter with the status and an excerpt of
/// the body); a refused connection → `Unavailable`. The endpoint's circuit breaker counts
/// refused connections, timeouts, 5xx, 408 and 429 against it; while it is open no request
/// is sent and every message is `Unavailable`: the pipeline waits, its intake pauses and no
/// attempt is used up, until probes get through again.
///
/// Order: messages of one key are sent one after the other, and after one that failed for
/// now, none of its key is sent (they would overtake it); different keys go out concurrently
/// (`concurrency`). A batch body that is refused as a whole is sent again one message at a
/// time, so only the messages the service refuses are dead-lettered.
pub struct HttpSink {
    settings: Arc<Settings>,
    sender: Sender,
}

impl HttpSink {
    /// Checks `config` and builds the sink `name` (which labels its breaker's logs and
    /// metrics); nothing connects before the first write.
    pub fn new(name: &str, config: HttpSinkConfig) -> Result<Self> {
        let settings = Arc::new(Settings::try_from(config)?);
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("riverbed/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Client(e.to_string()))?;
        let breaker = CircuitBreaker::new(settings.breaker, name, &settings.endpoint);
        Ok(HttpSink {
            sender: Sender::new(name, client, breaker, settings.clone()),
            settings,
        })
    }

    /// The endpoint's circuit breaker.
    pub fn breaker(&self) -> &Arc<CircuitBreaker> {
        self.sender.breaker()
    }

    /// The endpoint (origin of the URL, credentials hidden).
    pub fn endpoint(&self) -> &str {
        &self.settings.endpoint
    }

    /// Sends the calls of one key in order; after one that failed for now, the rest get its
    /// outcome unsent.
    async fn chain(&self, batch: &[Message], calls: Vec<Call>) -> Vec<(usize, Outcome)> {
        let mut out = Vec::new();
        let mut held: Option<Outcome> = None;
        for c in calls {
            let outcomes = match &held {
                Some(o) => vec![o.clone(); c.indices.len()],
                None => self.send_isolating(batch, &c).await,
            };
            for (&i, o) in c.indices.iter().zip(outcomes) {
                if held.is_none() && matches!(o, Outcome::Transient(_) | Outcome::Unavailable(_)) {
                    held = Some(o.clone());
                }
                out.push((i, o));
            }
        }
        out
    }

    /// Sends one call; a batch body refused as a whole is sent again message by message.
    async fn send_isolating(&self, batch: &[Message], c: &Call) -> Vec<Outcome> {
        let outcome = self.sender.deliver(c).await;
        if c.indices.len() == 1 || !matches!(outcome, Outcome::Permanent(_)) {
            return vec![outcome; c.indices.len()];
        }
        tracing::info!(
            endpoint = %self.settings.endpoint,
            messages = c.indices.len(),
            "Batch refused; sending its messages one at a time to find the refused ones"
        );
        let mut outcomes = Vec::with_capacity(c.indices.len());
        let mut held: Option<Outcome> = None;
        for &i in &c.indices {
            let o = match &held {
                Some(o) => o.clone(),
                None => {
                    let one = call(&self.settings, batch, vec![i], c.target.clone());
                    self.sender.deliver(&one).await
                }
            };
            if matches!(o, Outcome::Transient(_) | Outcome::Unavailable(_)) {
                held.get_or_insert(o.clone());
            }
            outcomes.push(o);
        }
        outcomes
    }
}

/// The calls grouped into chains that must go out in order: one per key for single-message
/// bodies (a message without a key is a chain of its own), one for the whole batch for batch
/// bodies (a body holds several keys).
fn chains(batch: &[Message], calls: Vec<Call>, body: BodyFormat) -> Vec<Vec<Call>> {
    if body != BodyFormat::Message {
        return vec![calls];
    }
    let mut chains: Vec<Vec<Call>> = Vec::new();
    let mut by_key: HashMap<&str, usize> = HashMap::new();
    for c in calls {
        match batch[c.indices[0]].key.as_deref() {
            Some(k) => {
                let n = chains.len();
                let at = *by_key.entry(k).or_insert(n);
                if at == n {
                    chains.push(Vec::new());
                }
                chains[at].push(c);
            }
            None => chains.push(vec![c]),
        }
    }
    chains
}

#[async_trait]
impl Sink for HttpSink {
    async fn write(&self, batch: &[Message]) -> BatchOutcome {
        if self.breaker().state() == BreakerState::Open
            && let Err(open) = self.breaker().try_acquire()
        {
            // Nothing to send while open: no attempt is used up, the pipeline waits.
            return BatchOutcome::unavailable(Failure::new("breaker_open", open.to_string()));
        }
        let (calls, failed) = plan(&self.settings, batch);
        let mut outcomes = vec![Outcome::Ok; batch.len()];
        for (i, f) in failed {
            outcomes[i] = Outcome::Permanent(f);
        }
        let results: Vec<Vec<(usize, Outcome)>> =
            futures::stream::iter(chains(batch, calls, self.settings.body))
                .map(|chain| self.chain(batch, chain))
                .buffer_unordered(self.settings.concurrency.get())
                .collect()
                .await;
        for (i, o) in results.into_iter().flatten() {
            outcomes[i] = o;
        }
        if outcomes.iter().all(Outcome::is_ok) {
            BatchOutcome::Committed
        } else {
            BatchOutcome::Each(outcomes)
        }
    }
}
