//! The runtime's behaviour in specific situations: malformed input, exhausted retries, broker
//! retry, fan-out, dead letters, stops with stuck sinks, the in-flight bound.

use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::Arc;
use std::time::Duration;

use riverbed_core::testing::{
    Event, Journal, MemoryDeadLetters, MemorySink, MemorySource, numbered_messages,
};
use riverbed_core::{
    Failure, KeySpec, Message, Outcome, Pipeline, RetryMode, RetryPolicy, Settlement,
};

fn nz(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).unwrap()
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

/// A sink that records the size of each batch and when it was written.
#[derive(Clone, Default)]
struct BatchLog(Arc<std::sync::Mutex<Vec<(usize, tokio::time::Instant)>>>);

#[async_trait::async_trait]
impl riverbed_core::Sink for BatchLog {
    async fn write(&self, batch: &[Message]) -> riverbed_core::BatchOutcome {
        let now = tokio::time::Instant::now();
        self.0.lock().unwrap().push((batch.len(), now));
        riverbed_core::BatchOutcome::Committed
    }
}

#[tokio::test]
async fn batches_never_exceed_max_size() {
    let journal = Journal::default();
    let log = BatchLog::default();
    let report = Pipeline::builder()
        .source(MemorySource::new(
            numbered_messages(1000, 3),
            journal.clone(),
        ))
        .partitions(nz(2))
        .sink_with(
            "sized",
            "main",
            Arc::new(log.clone()),
            Some(riverbed_core::BatchSettings {
                max_size: nz(7),
                max_wait: Duration::from_millis(1),
                coalesce: false,
            }),
        )
        .dead_letters(Arc::new(MemoryDeadLetters::new(journal.clone())))
        .build()
        .unwrap()
        .run(std::future::pending())
        .await
        .unwrap();
    assert_eq!(report.stats.acked, 1000);
    let sizes: Vec<usize> = log.0.lock().unwrap().iter().map(|(n, _)| *n).collect();
    assert_eq!(sizes.iter().sum::<usize>(), 1000);
    assert!(sizes.iter().all(|&n| n <= 7), "{sizes:?}");
    assert!(sizes.contains(&7), "full batches are written: {sizes:?}");
}

#[tokio::test(start_paused = true)]
async fn a_partial_batch_is_written_when_its_max_wait_is_over() {
    let journal = Journal::default();
    let log = BatchLog::default();
    let started = tokio::time::Instant::now();
    let report = Pipeline::builder()
        .source(MemorySource::new(numbered_messages(3, 1), journal.clone()).keep_open())
        .partitions(nz(1))
        .sink_with(
            "waiting",
            "main",
            Arc::new(log.clone()),
            Some(riverbed_core::BatchSettings {
                max_size: nz(100),
                max_wait: Duration::from_millis(250),
                coalesce: false,
            }),
        )
        .dead_letters(Arc::new(MemoryDeadLetters::new(journal.clone())))
        .build()
        .unwrap()
        .run(tokio::time::sleep(Duration::from_secs(1)))
        .await
        .unwrap();
    assert_eq!(report.stats.acked, 3);
    let writes = log.0.lock().unwrap().clone();
    let at: Vec<_> = writes.iter().map(|(n, t)| (*n, *t - started)).collect();
    assert_eq!(writes.len(), 1, "three messages, one batch: {at:?}");
    let waited = at[0].1;
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_millis(300),
        "written {waited:?} after the first message, not when max_wait was over"
    );
}
