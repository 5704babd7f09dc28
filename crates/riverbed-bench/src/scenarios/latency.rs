//! End-to-end latency: from the producer's send timestamp (a header) to the moment the pipeline
//! settles the delivery, that is after every sink committed it and its ack was handed to the
//! source. Wraps any source, so every scenario measures the same span.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use async_trait::async_trait;
use riverbed_core::{
    AckToken, Acker, Capabilities, DeadLetterRoute, DeadLetterSink, Delivery, Settled, Settlement,
    Source, SourceError,
};

/// The header carrying the send time, in microseconds since the Unix epoch.
pub const SENT_HEADER: &str = "x-bench-sent-us";

/// Microseconds since the Unix epoch.
pub fn micros_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// Latencies of settled deliveries, in microseconds.
#[derive(Clone, Default)]
pub struct Latencies(Arc<Mutex<Vec<u64>>>);

impl Latencies {
    /// The 50th and 99th percentiles in milliseconds, if anything was measured.
    pub fn percentiles(&self) -> Option<(f64, f64)> {
        let mut l = self.0.lock().expect("latency lock").clone();
        if l.is_empty() {
            return None;
        }
        l.sort_unstable();
        let q = |p: f64| l[((l.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0;
        Some((q(0.5), q(0.99)))
    }
}

/// A source whose acknowledgements are timed against the send header of their delivery.
pub struct Timed {
    inner: Box<dyn Source>,
    acker: Arc<TimedAcker>,
}

struct TimedAcker {
    inner: Arc<dyn Acker>,
    sent: Mutex<HashMap<AckToken, i64>>,
    seen: Latencies,
}

impl Timed {
    /// Wraps `inner`; acknowledged deliveries add their latency to `seen`.
    pub fn new(inner: impl Source, seen: Latencies) -> Self {
        let acker = Arc::new(TimedAcker {
            inner: inner.acker(),
            sent: Mutex::new(HashMap::new()),
            seen,
        });
        Timed {
            inner: Box::new(inner),
            acker,
        }
    }
}

impl Acker for TimedAcker {
    fn settle(&self, settled: Vec<Settled>) {
        let now = micros_now();
        {
            let mut sent = self.sent.lock().expect("sent lock");
            let mut seen = self.seen.0.lock().expect("latency lock");
            for s in &settled {
                if let Some(at) = sent.remove(&s.token)
                    && s.settlement == Settlement::Ack
                {
                    seen.push((now - at).max(0) as u64);
                }
            }
        }
        self.inner.settle(settled);
    }
}

#[async_trait]
impl Source for Timed {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    async fn recv(&mut self, out: &mut Vec<Delivery>, max: usize) -> Result<bool, SourceError> {
        let start = out.len();
        let more = self.inner.recv(out, max).await?;
        let mut sent = self.acker.sent.lock().expect("sent lock");
        for d in &out[start..] {
            if let Some(at) = d.message.headers.get(SENT_HEADER).and_then(|h| h.as_i64()) {
                sent.insert(d.token, at);
            }
        }
        Ok(more)
    }

    fn acker(&self) -> Arc<dyn Acker> {
        self.acker.clone()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn dead_letters(&self) -> Option<Arc<dyn DeadLetterSink>> {
        self.inner.dead_letters()
    }

    fn route_dead_letters(&mut self, route: DeadLetterRoute) {
        self.inner.route_dead_letters(route);
    }

    async fn close(&mut self) -> Result<(), SourceError> {
        self.inner.close().await
    }
}
