//! The breaker's decisions, apart from its mechanism: when it opens, how long it stays open
//! and how many probes close it again.

use std::num::NonZeroU32;
use std::time::Duration;

use super::window::Window;

/// When a circuit breaker opens and how it comes back.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerPolicy {
    /// Opens when more than this share (0 < ratio ≤ 1) of the calls in the window failed.
    pub failure_ratio: f64,
    /// How many of the most recent calls the ratio is computed over.
    pub window: NonZeroU32,
    /// Calls needed in the window before the breaker may open (a single failure on a quiet
    /// endpoint does not open it).
    pub minimum_calls: NonZeroU32,
    /// How long it stays open before letting probes through (half-open).
    pub open_for: Duration,
    /// Probe calls let through while half-open; all of them must succeed to close it, any
    /// failure opens it again.
    pub half_open_probes: NonZeroU32,
}

impl Default for BreakerPolicy {
    /// Half of the last 20 calls failed (at least 10 calls), open for 10 s, 3 probes.
    fn default() -> Self {
        BreakerPolicy {
            failure_ratio: 0.5,
            window: NonZeroU32::new(20).expect("20 is not zero"),
            minimum_calls: NonZeroU32::new(10).expect("10 is not zero"),
            open_for: Duration::from_secs(10),
            half_open_probes: NonZeroU32::new(3).expect("3 is not zero"),
        }
    }
}

impl BreakerPolicy {
    /// Checks the settings; the error names the field.
    pub fn check(&self) -> Result<(), String> {
        if !(self.failure_ratio > 0.0 && self.failure_ratio <= 1.0) {
            return Err(format!(
                "`failure_ratio` must be above 0 and at most 1, not {}",
                self.failure_ratio
            ));
        }
        if self.minimum_calls > self.window {
            return Err(format!(
                "`minimum_calls` ({}) must not exceed `window` ({})",
                self.minimum_calls, self.window
            ));
        }
        if self.open_for.is_zero() {
            return Err("`open_for` must be longer than zero".into());
        }
        Ok(())
    }

    /// True when the calls in `window` call for opening the breaker. A ratio of 1 opens when
    /// every call failed.
    pub fn should_open(&self, window: &Window) -> bool {
        let (calls, failures) = (window.calls(), window.failures());
        if calls < self.minimum_calls.get() {
            return false;
        }
        let share = f64::from(failures) / f64::from(calls);
        if self.failure_ratio >= 1.0 {
            failures == calls
        } else {
            share > self.failure_ratio
        }
    }
}
