//! The producer state machine, driven with explicit instants.

use super::*;

const S: Duration = Duration::from_secs(1);

fn tracker(stored: &[(&str, u64)], t0: Instant) -> Tracker {
    let stored = stored.iter().map(|(p, t)| (p.to_string(), *t)).collect();
    let mut next = 0;
    Tracker::new(
        &["1".to_owned(), "3".to_owned()],
        &stored,
        Timing {
            alive_timeout: 20 * S,
            min_interval: 30 * S,
            recovery_timeout: 300 * S,
        },
        Box::new(move || {
            next += 1;
            next
        }),
        t0,
    )
}

fn request(producer: &str, after: Option<u64>, request_id: u64) -> Action {
    Action::Request {
        producer: producer.into(),
        after,
        request_id,
    }
}

#[test]
fn a_start_recovers_from_the_stored_alive_and_is_up_only_on_its_snapshot() {
    let t0 = Instant::now();
    let mut t = tracker(&[("1", 1000)], t0);
    assert_eq!(t.status("1"), Some(Status::Down(Reason::Start)));
    assert!(!t.alive("1", true, t0 + S), "not good while down");
    assert_eq!(t.take_actions(), vec![request("1", Some(1000), 1)]);
    assert!(!t.snapshot_complete("1", 99, t0 + 2 * S), "another request");
    assert!(!t.alive("1", true, t0 + 2 * S), "not good while recovering");
    assert!(t.snapshot_complete("1", 1, t0 + 3 * S));
    assert_eq!(t.status("1"), Some(Status::Up));
    assert!(
        matches!(&t.take_actions()[..], [Action::Up { request_id: 1, down_for, .. }] if *down_for == 3 * S)
    );
    assert!(t.alive("1", true, t0 + 4 * S), "good once up");
    t.alive("3", true, t0 + S);
    assert_eq!(
        t.take_actions(),
        vec![request("3", None, 2)],
        "nothing stored: all"
    );
    assert!(!t.alive("9", true, t0), "an untracked producer");
}

#[test]
fn silence_unsubscribe_and_reconnect_mark_down_and_requests_keep_their_interval() {
    let t0 = Instant::now();
    let mut t = tracker(&[], t0);
    t.alive("1", true, t0);
    t.snapshot_complete("1", 1, t0);
    t.committed("1", 5000);
    t.committed("1", 4000);
    t.take_actions();
    t.tick(t0 + 19 * S);
    assert_eq!(t.status("1"), Some(Status::Up));
    t.tick(t0 + 20 * S);
    assert_eq!(t.status("1"), Some(Status::Down(Reason::AliveTimeout)));
    // The next good alive comes 10 s after the first request: held back until 30 s.
    t.alive("1", true, t0 + 21 * S);
    assert_eq!(
        t.take_actions(),
        vec![Action::Down {
            producer: "1".into(),
            reason: Reason::AliveTimeout
        }]
    );
    t.tick(t0 + 29 * S);
    assert!(t.take_actions().is_empty());
    t.alive("1", true, t0 + 30 * S);
    t.tick(t0 + 30 * S);
    assert_eq!(t.take_actions(), vec![request("1", Some(5000), 2)]);
    t.snapshot_complete("1", 2, t0 + 31 * S);
    t.alive("1", false, t0 + 32 * S);
    assert_eq!(t.status("1"), Some(Status::Down(Reason::Unsubscribed)));
    t.alive("1", false, t0 + 70 * S);
    t.take_actions();
    assert!(
        t.take_actions().is_empty(),
        "unsubscribed alives ask for nothing"
    );
    t.alive("1", true, t0 + 71 * S);
    assert_eq!(t.take_actions(), vec![request("1", Some(5000), 3)]);
    t.snapshot_complete("1", 3, t0 + 72 * S);
    t.take_actions();
    t.sessions(1, t0 + 73 * S);
    assert_eq!(
        t.status("1"),
        Some(Status::Up),
        "the first session is no reconnect"
    );
    t.sessions(2, t0 + 73 * S);
    assert_eq!(t.status("1"), Some(Status::Down(Reason::Reconnect)));
    assert_eq!(
        t.take_actions(),
        vec![Action::Down {
            producer: "1".into(),
            reason: Reason::Reconnect
        }],
        "producer 3 was down already: no new event"
    );
}

#[test]
fn a_failed_or_unanswered_recovery_is_asked_again() {
    let t0 = Instant::now();
    let mut t = tracker(&[("1", 7)], t0);
    t.alive("1", true, t0);
    t.request_failed("1", 1, t0 + S);
    assert_eq!(t.status("1"), Some(Status::Down(Reason::RecoveryFailed)));
    t.alive("1", true, t0 + 30 * S);
    t.take_actions();
    for i in 1..=30 {
        t.alive("1", true, t0 + 30 * S + i * 10 * S);
    }
    t.tick(t0 + 330 * S);
    assert_eq!(t.status("1"), Some(Status::Down(Reason::RecoveryTimeout)));
    t.alive("1", true, t0 + 331 * S);
    let actions = t.take_actions();
    assert_eq!(
        actions.last(),
        Some(&request("1", Some(7), 3)),
        "{actions:?}"
    );
    t.snapshot_complete("1", 2, t0 + 332 * S);
    assert!(
        matches!(
            t.status("1"),
            Some(Status::Recovering { request_id: 3, .. })
        ),
        "the late answer to request 2 counts for nothing"
    );
}
