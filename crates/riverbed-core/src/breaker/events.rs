//! What a breaker reports: each transition and rejection is one log line and one metric.

use std::time::Duration;

use super::BreakerState;

/// The labels of one breaker: the sink and the endpoint it guards.
#[derive(Debug, Clone)]
pub(crate) struct Labels {
    pub sink: String,
    pub endpoint: String,
}

impl Labels {
    /// The state gauge, set at creation and on every transition.
    pub fn state(&self, state: BreakerState) {
        metrics::gauge!("riverbed_breaker_state", "sink" => self.sink.clone(), "endpoint" => self.endpoint.clone())
            .set(state.gauge());
    }

    /// One transition, logged and counted.
    pub fn transition(&self, from: BreakerState, to: BreakerState, why: &Why) {
        self.state(to);
        metrics::counter!(
            "riverbed_breaker_transitions_total",
            "sink" => self.sink.clone(),
            "endpoint" => self.endpoint.clone(),
            "from" => from.as_str(),
            "to" => to.as_str()
        )
        .increment(1);
        let (sink, endpoint) = (&self.sink, &self.endpoint);
        match (to, why) {
            (
                BreakerState::Open,
                Why::Failures {
                    calls, failures, ..
                },
            ) => tracing::warn!(
                sink = %sink, endpoint = %endpoint, from = from.as_str(), to = to.as_str(),
                calls, failures, open_ms = why.open_ms(),
                "Circuit breaker opened; the sink's partitions wait and intake pauses"
            ),
            (BreakerState::Open, _) => tracing::warn!(
                sink = %sink, endpoint = %endpoint, from = from.as_str(), to = to.as_str(),
                open_ms = why.open_ms(),
                "Circuit breaker probe failed; open again"
            ),
            (BreakerState::HalfOpen, _) => tracing::info!(
                sink = %sink, endpoint = %endpoint, from = from.as_str(), to = to.as_str(),
                "Circuit breaker half-open; letting probes through"
            ),
            (BreakerState::Closed, _) => tracing::info!(
                sink = %sink, endpoint = %endpoint, from = from.as_str(), to = to.as_str(),
                "Circuit breaker closed; calls flow again"
            ),
        }
    }

    /// A call refused while open (or beyond the half-open probes).
    pub fn rejected(&self) {
        metrics::counter!("riverbed_breaker_rejections_total", "sink" => self.sink.clone(), "endpoint" => self.endpoint.clone())
            .increment(1);
    }
}

/// Why a transition happened, for its log line.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Why {
    /// Too many calls of the window failed.
    Failures {
        /// Calls in the window.
        calls: u32,
        /// Failed ones.
        failures: u32,
        /// How long it stays open.
        open_for: Duration,
    },
    /// A half-open probe failed; open for this long again.
    ProbeFailed(Duration),
    /// The open period is over.
    OpenElapsed,
    /// Every probe succeeded.
    ProbesSucceeded,
}

impl Why {
    fn open_ms(&self) -> u64 {
        match self {
            Why::ProbeFailed(d) | Why::Failures { open_for: d, .. } => d.as_millis() as u64,
            _ => 0,
        }
    }
}
