//! The dead-letter storm guard: a pipeline whose messages nearly all fail stops consuming
//! instead of emptying its source into the dead-letter destination.

use std::collections::HashSet;
use std::num::NonZeroU32;
use std::sync::Arc;

use riverbed_core::testing::{
    Event, Journal, MemoryDeadLetters, MemorySink, MemorySource, numbered_messages,
};
use riverbed_core::{
    Failure, KeySpec, Outcome, Pipeline, PipelineError, Report, Settlement, StormGuard,
};

/// Runs 1,000 messages through a sink that refuses those `refuse` picks.
async fn run(
    guard: Option<StormGuard>,
    refuse: impl Fn(usize) -> bool + Send + Sync + 'static,
) -> (
    Result<Report, PipelineError>,
    Journal,
    Arc<MemoryDeadLetters>,
) {
    let journal = Journal::default();
    let dl = Arc::new(MemoryDeadLetters::new(journal.clone()));
    let sink = MemorySink::failing("s", journal.clone(), move |m, _| {
        let id = m.meta.message_id.as_deref().unwrap_or_default();
        let n: usize = id.trim_start_matches('m').parse().unwrap();
        if refuse(n) {
            Outcome::Permanent(Failure::rejected("schema changed"))
        } else {
            Outcome::Ok
        }
    });
    let result = Pipeline::builder()
        .source(MemorySource::new(
            numbered_messages(1000, 10),
            journal.clone(),
        ))
        .key(KeySpec::JsonPointer("/key".into()))
        .max_in_flight(std::num::NonZeroUsize::new(64).unwrap())
        .storm_guard(guard)
        .sink("s", sink)
        .dead_letters(dl.clone())
        .build()
        .unwrap()
        .run(std::future::pending())
        .await;
    (result, journal, dl)
}

#[tokio::test(start_paused = true)]
async fn storm_of_dead_letters_stops_the_pipeline_and_gives_the_rest_back() {
    let (result, journal, dl) = run(Some(StormGuard::default()), |_| true).await;
    let err = result.expect_err("the guard stops the run");
    let PipelineError::DeadLetterStorm { tripped, max_share } = &err else {
        panic!("unexpected error: {err}");
    };
    assert_eq!(*max_share, 0.5);
    assert_eq!((tripped.dead_lettered, tripped.settled), (50, 50));
    assert!(err.to_string().contains("dead-letter storm"), "{err}");
    assert_eq!(
        dl.letters().len(),
        50,
        "the 50th letter trips the default guard; no letter after it is stored"
    );
    // Nothing is lost: every message delivered is either dead-lettered or given back.
    let mut given_back = HashSet::new();
    let mut acked = 0;
    for e in journal.events() {
        if let Event::Settle { id, settlement } = e {
            match settlement {
                Settlement::Requeue => assert!(given_back.insert(id)),
                Settlement::Ack => acked += 1,
                other => panic!("unexpected settlement {other:?}"),
            }
        }
    }
    assert_eq!(acked, 50, "only the stored letters are acknowledged");
    assert!(
        !given_back.is_empty(),
        "the in-flight failures went back to the source"
    );
    assert!(
        given_back.len() <= 64,
        "at most the in-flight window is given back"
    );
}

#[tokio::test(start_paused = true)]
async fn storm_guard_lets_ordinary_failure_rates_through() {
    let (result, _, dl) = run(Some(StormGuard::default()), |n| n % 3 == 0).await;
    let report = result.expect("a third failing is not a storm");
    assert_eq!(report.stats.dead_lettered, 334);
    assert_eq!(dl.letters().len(), 334);
    assert_eq!(report.stats.acked, 666);
}

#[tokio::test(start_paused = true)]
async fn storm_guard_trips_on_a_bad_deploy_mid_run() {
    let guard = StormGuard {
        max_share: 0.2,
        window: NonZeroU32::new(50).unwrap(),
        min_sample: NonZeroU32::new(50).unwrap(),
    };
    let (result, _, dl) = run(Some(guard), |n| n >= 400).await;
    let err = result.expect_err("everything after 400 fails");
    assert!(
        matches!(err, PipelineError::DeadLetterStorm { .. }),
        "{err}"
    );
    let letters = dl.letters().len();
    assert!((11..=50).contains(&letters), "{letters} letters stored");
}

#[tokio::test(start_paused = true)]
async fn storm_guard_off_dead_letters_everything() {
    let (result, _, dl) = run(None, |_| true).await;
    let report = result.expect("no guard, no stop");
    assert_eq!(report.stats.dead_lettered, 1000);
    assert_eq!(dl.letters().len(), 1000);
}
