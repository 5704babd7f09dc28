//! The breaker's state machine, driven with tokio's paused clock.

use std::num::NonZeroU32;
use std::time::Duration;

use super::*;

fn policy() -> BreakerPolicy {
    BreakerPolicy {
        failure_ratio: 0.5,
        window: NonZeroU32::new(10).unwrap(),
        minimum_calls: NonZeroU32::new(4).unwrap(),
        open_for: Duration::from_secs(10),
        half_open_probes: NonZeroU32::new(2).unwrap(),
    }
}

fn calls(b: &Arc<CircuitBreaker>, failed: &[bool]) -> BreakerState {
    let mut last = BreakerState::Closed;
    for &f in failed {
        let p = b.try_acquire().expect("closed breaker lets calls through");
        last = if f { p.failure() } else { p.success() };
    }
    last
}

#[tokio::test(start_paused = true)]
async fn breaker_needs_minimum_calls_and_the_ratio_to_open() {
    let b = CircuitBreaker::new(policy(), "s", "e");
    assert_eq!(
        calls(&b, &[true, true, true]),
        BreakerState::Closed,
        "3 calls < minimum"
    );
    // The 4th call (a success) completes the minimum: 3 failures of 4 is above one half.
    assert_eq!(calls(&b, &[false]), BreakerState::Open);
    let err = b.try_acquire().expect_err("open refuses");
    assert_eq!(err.retry_in, Duration::from_secs(10));
}

#[tokio::test(start_paused = true)]
async fn breaker_stays_closed_at_exactly_the_ratio() {
    let b = CircuitBreaker::new(policy(), "s", "e");
    assert_eq!(calls(&b, &[true, false, true, false]), BreakerState::Closed);
    assert_eq!(calls(&b, &[false; 20]), BreakerState::Closed);
    assert_eq!(
        calls(&b, &[true; 5]),
        BreakerState::Closed,
        "5 of the last 10"
    );
    assert_eq!(calls(&b, &[true]), BreakerState::Open, "6 of the last 10");
}

#[tokio::test(start_paused = true)]
async fn breaker_half_opens_after_open_for_and_closes_when_probes_succeed() {
    let b = CircuitBreaker::new(policy(), "s", "e");
    calls(&b, &[true; 4]);
    assert_eq!(b.state(), BreakerState::Open);
    tokio::time::advance(Duration::from_secs(9)).await;
    assert!(b.try_acquire().is_err(), "still open after 9 s");
    tokio::time::advance(Duration::from_secs(1)).await;
    let p1 = b.try_acquire().expect("first probe");
    let p2 = b.try_acquire().expect("second probe");
    assert!(p1.is_probe() && p2.is_probe());
    assert_eq!(b.state(), BreakerState::HalfOpen);
    let refused = b.try_acquire().expect_err("only two probes at once");
    assert_eq!(refused.retry_in, Duration::ZERO);
    assert_eq!(p1.success(), BreakerState::HalfOpen);
    assert_eq!(p2.success(), BreakerState::Closed);
    assert_eq!(
        calls(&b, &[true; 3]),
        BreakerState::Closed,
        "a fresh window"
    );
}

#[tokio::test(start_paused = true)]
async fn breaker_probe_failure_opens_again_for_the_full_period() {
    let b = CircuitBreaker::new(policy(), "s", "e");
    calls(&b, &[true; 4]);
    tokio::time::advance(Duration::from_secs(10)).await;
    let probe = b.try_acquire().expect("probe");
    let other = b.try_acquire().expect("second probe");
    assert_eq!(probe.failure(), BreakerState::Open);
    assert_eq!(
        other.success(),
        BreakerState::Open,
        "a probe of the earlier half-open period does not count"
    );
    tokio::time::advance(Duration::from_secs(5)).await;
    assert_eq!(
        b.try_acquire().unwrap_err().retry_in,
        Duration::from_secs(5)
    );
}

#[tokio::test(start_paused = true)]
async fn breaker_cancelled_probe_gives_its_slot_back() {
    let b = CircuitBreaker::new(policy(), "s", "e");
    calls(&b, &[true; 4]);
    tokio::time::advance(Duration::from_secs(10)).await;
    let p1 = b.try_acquire().expect("probe");
    let p2 = b.try_acquire().expect("probe");
    drop(p1);
    let p3 = b
        .try_acquire()
        .expect("the dropped probe's slot is free again");
    assert_eq!(p2.success(), BreakerState::HalfOpen);
    assert_eq!(p3.success(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn breaker_ignores_outcomes_of_calls_from_an_earlier_state() {
    let b = CircuitBreaker::new(policy(), "s", "e");
    let slow = b.try_acquire().expect("closed");
    calls(&b, &[true; 4]);
    assert_eq!(
        slow.success(),
        BreakerState::Open,
        "a late success does not close it"
    );
}

#[test]
fn breaker_policy_is_checked() {
    assert!(BreakerPolicy::default().check().is_ok());
    let mut p = policy();
    p.failure_ratio = 0.0;
    assert!(p.check().unwrap_err().contains("failure_ratio"));
    p.failure_ratio = 1.0;
    assert!(p.check().is_ok());
    p.minimum_calls = NonZeroU32::new(11).unwrap();
    assert!(p.check().unwrap_err().contains("minimum_calls"));
    p.minimum_calls = NonZeroU32::new(1).unwrap();
    p.open_for = Duration::ZERO;
    assert!(p.check().unwrap_err().contains("open_for"));
}
