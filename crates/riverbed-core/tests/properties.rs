//! Property tests of the runtime's guarantees against in-memory sources and sinks that journal
//! events, with random failures, batch sizes, partitions, windows and stops: nothing lost,
//! nothing acknowledged before its sinks committed, per-key order kept (in-process retry), every
//! message ended exactly once (broker retry).

use std::collections::{HashMap, HashSet};
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use riverbed_core::testing::{
    Event, Journal, MemoryDeadLetters, MemorySink, MemorySource, numbered_messages,
};
use riverbed_core::{
    BatchSettings, Failure, KeySpec, Outcome, Pipeline, RetryMode, RetryPolicy, Settlement,
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
        coalesce: false,
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
        // Random failure rates dead-letter most messages on purpose: the invariants are the point.
        .storm_guard(None)
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
        // Random failure rates dead-letter most messages on purpose: the invariants are the point.
        .storm_guard(None)
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
