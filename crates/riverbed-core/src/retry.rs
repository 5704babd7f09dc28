//! Retry policy: how many attempts, how long between them, and where the waiting happens.

use std::num::NonZeroU32;
use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

/// Where a transiently failed message waits for its next attempt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryMode {
    /// The partition retries the batch itself and waits: per-key order is kept, and the
    /// message holds its in-flight slot while it waits.
    #[default]
    InProcess,
    /// The source holds the message back (a TTL retry queue) and redelivers it: no slot is held,
    /// but later messages of the same key may overtake it. Only for sources that can.
    Broker,
}

/// How transient failures are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; after the last one the message is dead-lettered.
    pub max_attempts: NonZeroU32,
    /// Delay before the second attempt.
    pub initial_backoff: Duration,
    /// Upper bound on any delay.
    pub max_backoff: Duration,
    /// Where the waiting happens.
    pub mode: RetryMode,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: NonZeroU32::new(5).expect("5 is not zero"),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(30),
            mode: RetryMode::InProcess,
        }
    }
}

impl RetryPolicy {
    /// The delay before attempt `next_attempt` (2 for the first retry): exponential, capped,
    /// with jitter between 50% and 100% so retries of many messages do not align.
    pub fn delay_before(&self, next_attempt: u32) -> Duration {
        backoff_delay(self.initial_backoff, self.max_backoff, next_attempt)
    }

    /// True when a message that has had `attempts` attempts may have another.
    pub fn may_retry(&self, attempts: u32) -> bool {
        attempts < self.max_attempts.get()
    }
}

fn backoff_delay(initial: Duration, max: Duration, next_attempt: u32) -> Duration {
    let exp = next_attempt.saturating_sub(2).min(30);
    let base = initial.saturating_mul(1u32 << exp).min(max);
    let jitter: f64 = rand::rng().random_range(0.5..=1.0);
    base.mul_f64(jitter)
}

/// A running exponential backoff for loops that retry until they succeed (reconnects,
/// dead-letter writes).
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// Starts at `initial`, doubles up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            attempt: 1,
        }
    }

    /// The next delay to wait.
    pub fn next_delay(&mut self) -> Duration {
        self.attempt = self.attempt.saturating_add(1);
        backoff_delay(self.initial, self.max, self.attempt)
    }

    /// Back to the initial delay after a success.
    pub fn reset(&mut self) {
        self.attempt = 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_are_capped_and_jittered() {
        let p = RetryPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            ..RetryPolicy::default()
        };
        for _ in 0..100 {
            let d2 = p.delay_before(2);
            assert!(d2 >= Duration::from_millis(50) && d2 <= Duration::from_millis(100));
            let d4 = p.delay_before(4);
            assert!(d4 >= Duration::from_millis(200) && d4 <= Duration::from_millis(400));
            assert!(p.delay_before(40) <= Duration::from_secs(1));
        }
        assert!(p.may_retry(4));
        assert!(!p.may_retry(5));
    }
}
