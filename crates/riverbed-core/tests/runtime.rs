//! The runtime's guarantees, checked against in-memory sources and sinks that journal events:
//! nothing lost, nothing acknowledged before its sinks committed, per-key order kept.

use std::collections::{HashMap, HashSet};
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use riverbed_core::testing::{
    Event, Journal, MemoryDeadLetters, MemorySink, MemorySource, numbered_messages,
};
use riverbed_core::{
    BatchSettings, Failure, KeySpec, Message, Outcome, Pipeline, RetryMode, RetryPolicy, Settlement,
};

fn nz(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).unwrap()
}

fn seq_of(id: &str) -> u64 {
    id.trim_start_matches('m').parse().unwrap()
}

/// Deterministic pseudo-random number in [0, 1) for a (seed, id, attempt, salt).
fn roll(seed: u64, id: &str, attempt: u32, salt: u64) -> f64 {
    let h = xxhash_rust::xxh3::xxh3_64_with_seed(format!("{id}/{attempt}/{salt}").as_bytes(), seed);
    (h % 10_000) as f64 / 10_000.0
}

#[derive(Debug, Clone)]
struct Case {
    messages: usize,
    keys: usize,
    partitions: usize,
    in_flight: usize,
    batch: usize,
    wait_ms: u64,
    max_attempts: u32,
    p_transient: f64,
    p_permanent: f64,
    seed: u64,
    /// Sinks commit per key around a transient failure instead of rolling back the batch.
    partial: bool,
    /// Stop the pipeline this many milliseconds in (None: run until the source is exhausted).
    stop_after_ms: Option<u64>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        (1usize..300, 1usize..12, 1usize..6, 1usize..200),
        (1usize..40, 0u64..3, 1u32..4),
        (0.0f64..0.3, 0.0f64..0.05, any::<u64>()),
        (any::<bool>(), proptest::option::weighted(0.25, 0u64..4)),
    )
        .prop_map(
            |(
                (messages, keys, partitions, in_flight),
                (batch, wait_ms, max_attempts),
                (pt, pp, seed),
                (partial, stop_after_ms),
            )| Case {
                messages,
                keys,
                partitions,
                in_flight,
                batch,
                wait_ms,
                max_attempts,
                p_transient: pt,
                p_permanent: pp,
                seed,
                partial,
                stop_after_ms,
            },
        )
}

fn failing_sink(name: &'static str, journal: &Journal, c: &Case, salt: u64) -> MemorySink {
    let (seed, pt, pp) = (c.seed, c.p_transient, c.p_permanent);
    let sink = MemorySink::failing(name, journal.clone(), move |m, attempt| {
        let id = m.meta.message_id.as_deref().unwrap();
        if roll(seed, id, 0, salt + 100) < pp {
            return Outcome::Permanent(Failure::rejected(format!("{name} refuses {id}")));
        }
        if roll(seed, id, attempt, salt) < pt {
            return Outcome::Transient(Failure::unavailable(format!("{name} is down")));
        }
        Outcome::Ok
    });
    if c.partial { sink.partial() } else { sink }
}

/// Runs one case with two sinks and checks every invariant on the journal.
fn check(c: Case) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let journal = Journal::default();
    let dl = Arc::new(MemoryDeadLetters::new(journal.clone()));
    let batch = BatchSettings {
        max_size: nz(c.batch),
        max_wait: Duration::from_millis(c.wait_ms),
    };
    let pipeline = Pipeline::builder()
        .source(MemorySource::new(
            numbered_messages(c.messages, c.keys),
            journal.clone(),
        ))
        .key(KeySpec::JsonPointer("/key".into()))
        .partitions(nz(c.partitions))
        .max_in_flight(nz(c.in_flight))
        .retry(RetryPolicy {
            max_attempts: NonZeroU32::new(c.max_attempts).unwrap(),
            initial_backoff: Duration::from_micros(200),
            max_backoff: Duration::from_millis(2),
            mode: RetryMode::InProcess,
        })
        .sink_with(
            "a",
            "main",
            Arc::new(failing_sink("a", &journal, &c, 1)),
            Some(batch),
        )
        .sink_with(
            "b",
            "main",
            Arc::new(failing_sink("b", &journal, &c, 2)),
            Some(batch),
        )
        .dead_letters(dl.clone())
        .build()
        .unwrap();
    let stop = c.stop_after_ms;
    let report = rt
        .block_on(pipeline.run(async move {
            match stop {
                Some(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
                None => std::future::pending().await,
            }
        }))
        .unwrap();
    prop_assert!(
        report.drained,
        "no sink is stuck: a stop drains everything taken"
    );
    prop_assert!(report.exhausted || stop.is_some());
    let received = report.stats.received as usize;

    let events = journal.events();
    let mut committed: HashMap<(&str, &str), usize> = HashMap::new();
    let mut settled: HashMap<&str, Settlement> = HashMap::new();
    let mut dead: HashSet<&str> = HashSet::new();
    let mut last_seq: HashMap<(&str, String), u64> = HashMap::new();
    for (i, e) in events.iter().enumerate() {
        match e {
            Event::Commit { sink, id, key } => {
                prop_assert!(
                    committed.insert((sink, id), i).is_none(),
                    "{id} committed twice to {sink}"
                );
                prop_assert!(
                    !settled.contains_key(id.as_str()),
                    "{id} committed after it settled"
                );
                let k = (sink.as_str(), key.clone().unwrap());
                let s = seq_of(id);
                if let Some(prev) = last_seq.insert(k, s) {
                    prop_assert!(prev < s, "{sink}: key order broken, {prev} then {s}");
                }
            }
            Event::DeadLetter { id, .. } => {
                prop_assert!(dead.insert(id), "{id} dead-lettered twice");
            }
            Event::Settle { id, settlement } => {
                prop_assert!(
                    settled.insert(id, settlement.clone()).is_none(),
                    "{id} settled twice"
                );
                prop_assert_eq!(settlement, &Settlement::Ack);
                let both = committed.contains_key(&("a", id.as_str()))
                    && committed.contains_key(&("b", id.as_str()));
                prop_assert!(
                    both || dead.contains(id.as_str()),
                    "{id} acked before both sinks committed and not dead-lettered"
                );
            }
        }
    }
    prop_assert_eq!(settled.len(), received, "every delivery taken settled");
    prop_assert!(report.exhausted <= (received == c.messages));
    prop_assert_eq!(
        report.stats.acked + report.stats.dead_lettered,
        received as u64
    );
    prop_assert_eq!(report.stats.dead_lettered as usize, dead.len());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn nothing_lost_nothing_early_order_kept(c in case()) {
        check(c)?;
    }
}

/// Broker retry mode: failed messages come back later through the source (overtaking is
/// allowed there); every message still ends acknowledged or dead-lettered exactly once, and no
/// acknowledgement comes before both sinks committed it.
fn check_broker_mode(c: Case) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let journal = Journal::default();
    let pipeline = Pipeline::builder()
        .source(
            MemorySource::new(numbered_messages(c.messages, c.keys), journal.clone())
                .with_delayed_retry(),
        )
        .key(KeySpec::JsonPointer("/key".into()))
        .partitions(nz(c.partitions))
        .max_in_flight(nz(c.in_flight))
        .retry(RetryPolicy {
            max_attempts: NonZeroU32::new(c.max_attempts).unwrap(),
            initial_backoff: Duration::from_micros(200),
            max_backoff: Duration::from_millis(2),
            mode: RetryMode::Broker,
        })
        .sink("a", failing_sink("a", &journal, &c, 1))
        .sink("b", failing_sink("b", &journal, &c, 2))
        .dead_letters(Arc::new(MemoryDeadLetters::new(journal.clone())))
        .build()
        .unwrap();
    let report = rt.block_on(pipeline.run(std::future::pending())).unwrap();
    prop_assert!(report.exhausted && report.drained);
    let mut committed: HashSet<(&str, &str)> = HashSet::new();
    let (mut dead, mut acked) = (HashSet::new(), HashSet::new());
    let mut retries: HashMap<&str, u32> = HashMap::new();
    let events = journal.events();
    for e in &events {
        match e {
            Event::Commit { sink, id, .. } => {
                committed.insert((sink.as_str(), id.as_str()));
            }
            Event::DeadLetter { id, .. } => {
                prop_assert!(dead.insert(id.as_str()), "{id} dead-lettered twice");
            }
            Event::Settle { id, settlement } => match settlement {
                Settlement::Ack => {
                    let id = id.as_str();
                    prop_assert!(
                        dead.contains(id)
                            || (committed.contains(&("a", id)) && committed.contains(&("b", id))),
                        "{id} acked before both sinks committed it or its dead letter was stored"
                    );
                    prop_assert!(acked.insert(id), "{id} acked twice");
                }
                Settlement::Retry { next_attempt, .. } => {
                    prop_assert!(!acked.contains(id.as_str()), "{id} retried after its ack");
                    prop_assert!(*next_attempt <= c.max_attempts);
                    *retries.entry(id).or_default() += 1;
                }
                other => prop_assert!(false, "unexpected settlement {other:?}"),
            },
        }
    }
    prop_assert_eq!(acked.len(), c.messages, "every message ended once");
    prop_assert!(retries.values().all(|&n| n < c.max_attempts));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn broker_retries_end_every_message_once(c in case()) {
        check_broker_mode(Case { stop_after_ms: None, ..c })?;
    }
}

#[tokio::test]
async fn malformed_payloads_and_missing_keys_are_dead_lettered_with_reasons() {
    let journal = Journal::default();
    let dl = Arc::new(MemoryDeadLetters::new(journal.clone()));
    let mut msgs = numbered_messages(10, 3);
    msgs[3] = Message::new("{not json");
    msgs[3].meta.message_id = Some("m3".into());
    msgs[7] = Message::new(r#"{"id":7}"#);
    msgs[7].meta.message_id = Some("m7".into());
    let report = Pipeline::builder()
        .source(MemorySource::new(msgs, journal.clone()))
        .key(KeySpec::JsonPointer("/key".into()))
        .sink("s", MemorySink::new("s", journal.clone()))
        .dead_letters(dl.clone())
        .build()
        .unwrap()
        .run(std::future::pending())
        .await
        .unwrap();
    assert_eq!(report.stats.acked, 8);
    assert_eq!(report.stats.dead_lettered, 2);
    let letters = dl.letters();
    let reason = |id: &str| {
        letters
            .iter()
            .find(|l| l.message.meta.message_id.as_deref() == Some(id))
            .unwrap()
    };
    assert_eq!(reason("m3").reason, "malformed_payload");
    assert_eq!(reason("m3").message.payload, "{not json");
    assert_eq!(reason("m7").reason, "missing_key");
    assert_eq!(reason("m7").stage, "key");
}

#[tokio::test(start_paused = true)]
async fn exhausted_retries_dead_letter_with_attempts_and_times() {
    let journal = Journal::default();
    let dl = Arc::new(MemoryDeadLetters::new(journal.clone()));
    let sink = MemorySink::failing("flaky", journal.clone(), |m, _| {
        if m.meta.message_id.as_deref() == Some("m1") {
            Outcome::Transient(Failure::unavailable("connection refused"))
        } else {
            Outcome::Ok
        }
    });
    let report = Pipeline::builder()
        .source(MemorySource::new(numbered_messages(3, 1), journal.clone()))
        .retry(RetryPolicy {
            max_attempts: NonZeroU32::new(4).unwrap(),
            ..RetryPolicy::default()
        })
        .sink("flaky", sink)
        .dead_letters(dl.clone())
        .build()
        .unwrap()
        .run(std::future::pending())
        .await
        .unwrap();
    assert_eq!(report.stats.dead_lettered, 1);
    let l = &dl.letters()[0];
    assert_eq!(l.reason, "retries_exhausted");
    assert_eq!(l.error, "unavailable: connection refused");
    assert_eq!(l.attempts, 4);
    assert_eq!(l.stage, "flaky");
    assert!(
        l.last_failure > l.first_failure,
        "backoff separates first and last failure"
    );
    // The batch mates of m1 were retried with it (a rolled-back batch), then committed once.
    assert_eq!(report.stats.acked, 2);
}

#[tokio::test]
async fn broker_retry_hands_messages_back_with_an_attempt_count() {
    let journal = Journal::default();
    let dl = Arc::new(MemoryDeadLetters::new(journal.clone()));
    let sink = MemorySink::failing("s", journal.clone(), |m, _| {
        // Fails until the third delivery of every message.
        if m.meta.attempt < 3 {
            Outcome::Transient(Failure::unavailable("busy"))
        } else {
            Outcome::Ok
        }
    });
    let report = Pipeline::builder()
        .source(MemorySource::new(numbered_messages(20, 4), journal.clone()).with_delayed_retry())
        .retry(RetryPolicy {
            mode: RetryMode::Broker,
            initial_backoff: Duration::from_millis(1),
            ..RetryPolicy::default()
        })
        .sink("s", sink)
        .dead_letters(dl)
        .build()
        .unwrap()
        .run(std::future::pending())
        .await
        .unwrap();
    assert_eq!(report.stats.broker_retried, 40);
    assert_eq!(report.stats.acked, 20);
    let retries: Vec<u32> = journal
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Settle {
                settlement: Settlement::Retry { next_attempt, .. },
                ..
            } => Some(next_attempt),
            _ => None,
        })
        .collect();
    assert_eq!(retries.iter().filter(|a| **a == 2).count(), 20);
    assert_eq!(retries.iter().filter(|a| **a == 3).count(), 20);
}

#[test]
fn broker_retry_needs_a_capable_source() {
    let journal = Journal::default();
    let err = Pipeline::builder()
        .source(MemorySource::new(vec![], journal.clone()))
        .retry(RetryPolicy {
            mode: RetryMode::Broker,
            ..RetryPolicy::default()
        })
        .sink("s", MemorySink::new("s", journal.clone()))
        .dead_letters(Arc::new(MemoryDeadLetters::new(journal)))
        .build()
        .err()
        .unwrap();
    assert!(err.to_string().contains("retry mode `broker`"), "{err}");
}

#[tokio::test]
async fn fan_out_worst_outcome_wins_and_side_streams_reach_their_sinks() {
    use riverbed_core::processors::RunningAggregate;
    let journal = Journal::default();
    let dl = Arc::new(MemoryDeadLetters::new(journal.clone()));
    let strict = MemorySink::failing("strict", journal.clone(), |m, _| {
        if m.meta.message_id.as_deref() == Some("m4") {
            Outcome::Permanent(Failure::rejected("constraint violated"))
        } else {
            Outcome::Ok
        }
    });
    let report = Pipeline::builder()
        .source(MemorySource::new(numbered_messages(10, 2), journal.clone()))
        .key(KeySpec::JsonPointer("/key".into()))
        .processor(|_| Box::new(RunningAggregate::new("stats", "/seq", "aggregates")))
        .sink("lenient", MemorySink::new("lenient", journal.clone()))
        .sink("strict", strict)
        .sink_with(
            "aggs",
            "aggregates",
            Arc::new(MemorySink::new("aggs", journal.clone())),
            None,
        )
        .dead_letters(dl.clone())
        .build()
        .unwrap()
        .run(std::future::pending())
        .await
        .unwrap();
    assert_eq!(report.stats.acked, 9);
    let l = &dl.letters()[0];
    assert_eq!(
        (l.reason.as_str(), l.stage.as_str()),
        ("rejected", "strict")
    );
    let aggs = journal
        .events()
        .iter()
        .filter(|e| matches!(e, Event::Commit { sink, .. } if sink == "aggs"))
        .count();
    assert_eq!(aggs, 10, "one snapshot per reading");
}

#[tokio::test]
async fn dead_letters_are_retried_until_stored_before_the_ack() {
    let journal = Journal::default();
    let dl = Arc::new(MemoryDeadLetters::new(journal.clone()).failing_first(3));
    let sink = MemorySink::failing("s", journal.clone(), |_, _| {
        Outcome::Permanent(Failure::rejected("no"))
    });
    let report = Pipeline::builder()
        .source(MemorySource::new(numbered_messages(5, 1), journal.clone()))
        .sink("s", sink)
        .dead_letters(dl.clone())
        .build()
        .unwrap()
        .run(std::future::pending())
        .await
        .unwrap();
    assert_eq!(report.stats.dead_lettered, 5);
    assert_eq!(report.stats.dead_letter_write_failures, 3);
    let events = journal.events();
    for id in (0..5).map(|i| format!("m{i}")) {
        let d = events
            .iter()
            .position(|e| matches!(e, Event::DeadLetter { id: x, .. } if *x == id))
            .unwrap();
        let s = events
            .iter()
            .position(|e| matches!(e, Event::Settle { id: x, .. } if *x == id))
            .unwrap();
        assert!(d < s, "{id} acked before its dead letter was stored");
    }
}

#[tokio::test]
async fn stop_drains_everything_in_flight() {
    let journal = Journal::default();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let sink = MemorySink::new("s", journal.clone());
    let pipeline = Pipeline::builder()
        .source(MemorySource::new(numbered_messages(500, 7), journal.clone()).keep_open())
        .sink("s", sink)
        .dead_letters(Arc::new(MemoryDeadLetters::new(journal.clone())))
        .build()
        .unwrap();
    let stats = pipeline.stats();
    let run = tokio::spawn(pipeline.run(async {
        let _ = rx.await;
    }));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while stats.snapshot().received < 500 {
        assert!(tokio::time::Instant::now() < deadline, "intake stalled");
        tokio::task::yield_now().await;
    }
    tx.send(()).unwrap();
    let report = run.await.unwrap().unwrap();
    assert!(report.drained && !report.exhausted);
    assert_eq!(report.stats.acked, 500);
}

#[tokio::test(start_paused = true)]
async fn a_stuck_sink_cannot_hold_shutdown_past_the_grace_period() {
    struct Stuck;
    #[async_trait::async_trait]
    impl riverbed_core::Sink for Stuck {
        async fn write(&self, _: &[Message]) -> riverbed_core::BatchOutcome {
            std::future::pending().await
        }
    }
    let journal = Journal::default();
    let report = Pipeline::builder()
        .source(MemorySource::new(numbered_messages(10, 2), journal.clone()).keep_open())
        .sink("stuck", Stuck)
        .shutdown_grace(Duration::from_secs(3))
        .dead_letters(Arc::new(MemoryDeadLetters::new(journal.clone())))
        .build()
        .unwrap()
        .run(tokio::time::sleep(Duration::from_secs(1)))
        .await
        .unwrap();
    assert!(!report.drained);
    assert_eq!(
        report.stats.acked, 0,
        "nothing acked that no sink committed"
    );
    assert!(journal.events().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_stop_gets_through_while_a_stuck_partition_holds_up_the_intake() {
    // Enough messages that the stuck partition's queue fills while in-flight permits are left:
    // the intake waits on that queue, and a stop must still end the run within the grace.
    struct Stuck;
    #[async_trait::async_trait]
    impl riverbed_core::Sink for Stuck {
        async fn write(&self, _: &[Message]) -> riverbed_core::BatchOutcome {
            std::future::pending().await
        }
    }
    let journal = Journal::default();
    let pipeline = Pipeline::builder()
        .source(MemorySource::new(numbered_messages(50_000, 97), journal.clone()).keep_open())
        .key(KeySpec::JsonPointer("/key".into()))
        .partitions(nz(2))
        .max_in_flight(nz(40_000))
        .sink("stuck", Stuck)
        .shutdown_grace(Duration::from_secs(3))
        .dead_letters(Arc::new(MemoryDeadLetters::new(journal.clone())))
        .build()
        .unwrap();
    let stats = pipeline.stats();
    let run = pipeline.run(tokio::time::sleep(Duration::from_secs(1)));
    let report = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the run ends within the grace period after the stop")
        .unwrap();
    assert!(!report.drained);
    assert!(
        stats.snapshot().received < 40_000,
        "the intake was held up by the stuck partition, not by the in-flight bound"
    );
    assert_eq!(
        report.stats.acked, 0,
        "nothing acked that no sink committed"
    );
}

#[tokio::test]
async fn in_flight_is_bounded_by_max_in_flight() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    // The sink sees how many deliveries are unsettled: received minus settled.
    let journal = Journal::default();
    let peak = Arc::new(AtomicUsize::new(0));
    let pipeline = Pipeline::builder()
        .source(MemorySource::new(
            numbered_messages(2000, 50),
            journal.clone(),
        ))
        .key(KeySpec::JsonPointer("/key".into()))
        .max_in_flight(nz(64))
        .partitions(nz(3))
        .sink("s", MemorySink::new("s", journal.clone()))
        .dead_letters(Arc::new(MemoryDeadLetters::new(journal.clone())))
        .build()
        .unwrap();
    let stats = pipeline.stats();
    let p = peak.clone();
    let watcher = tokio::spawn(async move {
        loop {
            let s = stats.snapshot();
            p.fetch_max((s.received - s.settled()) as usize, Ordering::Relaxed);
            tokio::task::yield_now().await;
        }
    });
    let report = pipeline.run(std::future::pending()).await.unwrap();
    watcher.abort();
    assert_eq!(report.stats.acked, 2000);
    let peak = peak.load(Ordering::Relaxed);
    assert!(peak <= 64, "peak in flight {peak}");
    assert!(peak > 0);
}

#[tokio::test]
async fn a_dead_letter_after_broker_retries_reports_the_first_failure() {
    let journal = Journal::default();
    let dl = Arc::new(MemoryDeadLetters::new(journal.clone()));
    let sink = MemorySink::failing("s", journal.clone(), |_, _| {
        Outcome::Transient(Failure::unavailable("down"))
    });
    let report = Pipeline::builder()
        .source(MemorySource::new(numbered_messages(1, 1), journal.clone()).with_delayed_retry())
        .retry(RetryPolicy {
            mode: RetryMode::Broker,
            max_attempts: NonZeroU32::new(3).unwrap(),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
        })
        .sink("s", sink)
        .dead_letters(dl.clone())
        .build()
        .unwrap()
        .run(std::future::pending())
        .await
        .unwrap();
    assert_eq!(
        (report.stats.broker_retried, report.stats.dead_lettered),
        (2, 1)
    );
    let l = &dl.letters()[0];
    assert_eq!((l.reason.as_str(), l.attempts), ("retries_exhausted", 3));
    let waited = l.last_failure.duration_since(l.first_failure).unwrap();
    // Two delays of at least 50 and 100 ms (jitter takes at most half) lie between them.
    assert!(
        waited >= Duration::from_millis(140),
        "first failure kept across retries: {waited:?}"
    );
    assert!(
        l.message
            .headers
            .contains_key(riverbed_core::FIRST_FAILURE_HEADER)
    );
}
