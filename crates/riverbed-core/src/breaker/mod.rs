//! A circuit breaker for one destination: opens when too many recent calls failed, refuses
//! calls while open (the sink reports the destination unavailable, so the pipeline waits and
//! no attempt is used up), then lets a few probes through (half-open) and closes when they
//! succeed.
//!
//! Shaped like tower's middleware: [`BreakerPolicy`] makes the decisions, [`CircuitBreaker`]
//! is the mechanism, [`BreakerOpen`] the one small error; what counts as a failure is the
//! caller's to say (an HTTP sink counts 5xx, 429 and timeouts, not a 400).
//!
//! ```
//! # use riverbed_core::breaker::{BreakerPolicy, CircuitBreaker};
//! let breaker = CircuitBreaker::new(BreakerPolicy::default(), "orders-api", "https://api.example");
//! match breaker.try_acquire() {
//!     Ok(permit) => { /* call */ permit.success(); }
//!     Err(open) => { /* Outcome::Unavailable: retry in open.retry_in */ let _ = open; }
//! }
//! ```

mod events;
mod policy;
mod window;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

pub use policy::BreakerPolicy;
pub use window::Window;

use events::{Labels, Why};

/// Where a breaker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls flow; their outcomes fill the window.
    Closed,
    /// Calls are let through only as probes.
    HalfOpen,
    /// Calls are refused.
    Open,
}

impl BreakerState {
    /// The name in logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::HalfOpen => "half_open",
            BreakerState::Open => "open",
        }
    }

    /// The value of the `riverbed_breaker_state` gauge: 0 closed, 1 half-open, 2 open.
    pub fn gauge(self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::HalfOpen => 1.0,
            BreakerState::Open => 2.0,
        }
    }
}

/// A call refused because the breaker is open (or its half-open probes are all out).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("circuit breaker open for {endpoint} (next probe in {} ms)", .retry_in.as_millis())]
pub struct BreakerOpen {
    /// The endpoint guarded.
    pub endpoint: String,
    /// How long until probes are let through (zero when half-open and the probes are out).
    pub retry_in: Duration,
}

#[derive(Debug)]
enum State {
    Closed(Window),
    Open { until: Instant },
    HalfOpen { out: u32, succeeded: u32 },
}

#[derive(Debug)]
struct Inner {
    state: State,
    /// Bumped on every transition: the outcome of a call let through in an earlier state is
    /// not counted in the new one.
    generation: u64,
}

/// The breaker of one destination; share it (`Arc`) between every caller of the destination.
#[derive(Debug)]
pub struct CircuitBreaker {
    policy: BreakerPolicy,
    labels: Labels,
    inner: Mutex<Inner>,
}

impl CircuitBreaker {
    /// A closed breaker for `endpoint` of `sink` (both only label logs and metrics).
    pub fn new(policy: BreakerPolicy, sink: &str, endpoint: &str) -> Arc<Self> {
        let labels = Labels {
            sink: sink.to_owned(),
            endpoint: endpoint.to_owned(),
        };
        labels.state(BreakerState::Closed);
        Arc::new(CircuitBreaker {
            inner: Mutex::new(Inner {
                state: State::Closed(Window::new(policy.window.get())),
                generation: 0,
            }),
            policy,
            labels,
        })
    }

    /// The policy it follows.
    pub fn policy(&self) -> &BreakerPolicy {
        &self.policy
    }

    /// Where it is now (an open breaker whose time is up still says open until the next call).
    pub fn state(&self) -> BreakerState {
        match self.lock().state {
            State::Closed(_) => BreakerState::Closed,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("breaker lock")
    }

    /// Lets one call through, or refuses it while open. Report the call's outcome on the
    /// permit; a permit dropped without one (a cancelled call) counts as nothing.
    pub fn try_acquire(self: &Arc<Self>) -> Result<Permit, BreakerOpen> {
        let mut inner = self.lock();
        let now = Instant::now();
        if let State::Open { until } = inner.state {
            if now < until {
                drop(inner);
                self.labels.rejected();
                return Err(self.open_error(until - now));
            }
            self.move_to(
                &mut inner,
                State::HalfOpen {
                    out: 0,
                    succeeded: 0,
                },
                Why::OpenElapsed,
            );
        }
        let probe = match &mut inner.state {
            State::Closed(_) => false,
            State::HalfOpen { out, succeeded } => {
                if *out + *succeeded >= self.policy.half_open_probes.get() {
                    drop(inner);
                    self.labels.rejected();
                    return Err(self.open_error(Duration::ZERO));
                }
                *out += 1;
                true
            }
            State::Open { .. } => unreachable!("an elapsed open state became half-open above"),
        };
        Ok(Permit {
            breaker: self.clone(),
            generation: inner.generation,
            probe,
            reported: false,
        })
    }

    fn open_error(&self, retry_in: Duration) -> BreakerOpen {
        BreakerOpen {
            endpoint: self.labels.endpoint.clone(),
            retry_in,
        }
    }

    fn move_to(&self, inner: &mut Inner, to: State, why: Why) {
        let from = state_of(&inner.state);
        inner.state = to;
        inner.generation += 1;
        self.labels.transition(from, state_of(&inner.state), &why);
    }

    /// Records one call's outcome; the state after it.
    fn record(&self, generation: u64, probe: bool, failed: bool) -> BreakerState {
        let mut inner = self.lock();
        if inner.generation != generation {
            return state_of(&inner.state);
        }
        let open_for = self.policy.open_for;
        let until = Instant::now() + open_for;
        let probes = self.policy.half_open_probes.get();
        let next = match &mut inner.state {
            State::Closed(window) => {
                window.record(failed);
                self.policy.should_open(window).then(|| {
                    let (calls, failures) = (window.calls(), window.failures());
                    let why = Why::Failures {
                        calls,
                        failures,
                        open_for,
                    };
                    (State::Open { until }, why)
                })
            }
            State::HalfOpen { .. } if failed => {
                Some((State::Open { until }, Why::ProbeFailed(open_for)))
            }
            State::HalfOpen { out, succeeded } if probe => {
                *out -= 1;
                *succeeded += 1;
                (*succeeded >= probes).then(|| {
                    let window = Window::new(self.policy.window.get());
                    (State::Closed(window), Why::ProbesSucceeded)
                })
            }
            State::HalfOpen { .. } | State::Open { .. } => None,
        };
        if let Some((to, why)) = next {
            self.move_to(&mut inner, to, why);
        }
        state_of(&inner.state)
    }

    /// A probe dropped without an outcome gives its slot back.
    fn release(&self, generation: u64) {
        let mut inner = self.lock();
        if inner.generation == generation
            && let State::HalfOpen { out, .. } = &mut inner.state
        {
            *out = out.saturating_sub(1);
        }
    }
}

fn state_of(s: &State) -> BreakerState {
    match s {
        State::Closed(_) => BreakerState::Closed,
        State::Open { .. } => BreakerState::Open,
        State::HalfOpen { .. } => BreakerState::HalfOpen,
    }
}

/// One call let through; report how it went.
#[derive(Debug)]
#[must_use = "report the call's outcome with `success` or `failure`"]
pub struct Permit {
    breaker: Arc<CircuitBreaker>,
    generation: u64,
    probe: bool,
    reported: bool,
}

impl Permit {
    /// True when the call is a half-open probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }

    /// The call succeeded (the destination answered as it should); the state after it.
    pub fn success(mut self) -> BreakerState {
        self.reported = true;
        self.breaker.record(self.generation, self.probe, false)
    }

    /// The call failed in a way that counts against the destination (unreachable, timed out,
    /// overloaded); the state after it. Not [`BreakerState::Closed`] means the destination is
    /// to be treated as unavailable.
    pub fn failure(mut self) -> BreakerState {
        self.reported = true;
        self.breaker.record(self.generation, self.probe, true)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.reported && self.probe {
            self.breaker.release(self.generation);
        }
    }
}

#[cfg(test)]
mod tests;
