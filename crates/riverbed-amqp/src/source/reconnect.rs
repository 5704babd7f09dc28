//! When the source reconnects: at once after a session that proved healthy, after a growing,
//! jittered delay after failed attempts and after sessions that died young.

use std::time::Duration;

use riverbed_core::Backoff;
use tokio::time::Instant;

/// How long a session must live to count as healthy.
///
/// Deliveries alone prove nothing: a session whose channel fails on its first ack delivers
/// before it dies, and would reconnect, redeliver and die again in a tight loop.
pub(super) const HEALTHY_AFTER: Duration = Duration::from_secs(5);

/// The reconnect pacing of one source.
#[derive(Debug)]
pub(super) struct Reconnect {
    backoff: Backoff,
    healthy_after: Duration,
    opened_at: Option<Instant>,
}

impl Reconnect {
    /// Delays grow from `initial` to `max`; a session that lives `healthy_after` resets them.
    pub fn new(initial: Duration, max: Duration, healthy_after: Duration) -> Self {
        Reconnect {
            backoff: Backoff::new(initial, max),
            healthy_after,
            opened_at: None,
        }
    }

    /// A session opened at `now`. The backoff is not reset yet: the session has to prove healthy.
    pub fn opened(&mut self, now: Instant) {
        self.opened_at = Some(now);
    }

    /// An attempt to open a session failed: the delay before the next one.
    pub fn failed(&mut self) -> Duration {
        self.backoff.next_delay()
    }

    /// The session opened last was lost at `now`: the delay before reconnecting. Nothing after
    /// a session that lived `healthy_after` (the backoff starts over); after one that died
    /// young, the next delay of the backoff, as if opening it had failed.
    pub fn lost(&mut self, now: Instant) -> Duration {
        let lived = self
            .opened_at
            .take()
            .map_or(Duration::ZERO, |at| now.saturating_duration_since(at));
        if lived >= self.healthy_after {
            self.backoff.reset();
            Duration::ZERO
        } else {
            self.backoff.next_delay()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn policy() -> Reconnect {
        Reconnect::new(100 * MS, 1000 * MS, HEALTHY_AFTER)
    }

    /// Whether `d` lies in the jittered range of a base delay (50% to 100%).
    fn around(d: Duration, base: u64) -> bool {
        let base = Duration::from_millis(base);
        d >= base / 2 && d <= base
    }

    #[test]
    fn sessions_that_die_young_reconnect_after_a_growing_delay() {
        let mut r = policy();
        let t = Instant::now();
        for base in [100u64, 200, 400, 800, 1000, 1000] {
            r.opened(t);
            let d = r.lost(t + 10 * MS);
            assert!(around(d, base), "{d:?} for base {base} ms");
        }
    }

    #[test]
    fn a_healthy_session_resets_the_backoff_and_reconnects_at_once() {
        let mut r = policy();
        let t = Instant::now();
        for _ in 0..4 {
            r.failed();
        }
        r.opened(t);
        assert_eq!(r.lost(t + HEALTHY_AFTER), Duration::ZERO);
        r.opened(t);
        assert!(around(r.lost(t), 100), "starts over from the initial delay");
    }

    #[test]
    fn failed_attempts_and_young_sessions_share_one_backoff() {
        let mut r = policy();
        let t = Instant::now();
        assert!(around(r.failed(), 100));
        r.opened(t);
        assert!(
            around(r.lost(t + MS), 200),
            "opening did not reset the backoff"
        );
        assert!(around(r.failed(), 400));
    }
}
