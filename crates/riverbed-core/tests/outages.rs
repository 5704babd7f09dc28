//! Unreachable destinations and panics: an outage uses up no attempt and pauses the intake; a
//! panic on one message dead-letters that message; a partition that dies stops the pipeline.

use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use riverbed_core::testing::{
    Event, Journal, MemoryDeadLetters, MemorySink, MemorySource, numbered_messages,
};
use riverbed_core::{
    Acker, Capabilities, Delivery, Failure, KeySpec, Outcome, Pipeline, PipelineError, RetryPolicy,
    Settled, Source, SourceError,
};

fn nz(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).unwrap()
}

/// The committed message ids of each key, in commit order.
fn commits_per_key(journal: &Journal) -> std::collections::BTreeMap<String, Vec<u64>> {
    let mut per_key = std::collections::BTreeMap::<String, Vec<u64>>::new();
    for e in journal.events() {
        if let Event::Commit { id, key, .. } = e {
            let n: u64 = id.trim_start_matches('m').parse().unwrap();
            per_key.entry(key.unwrap_or_default()).or_default().push(n);
        }
    }
    per_key
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_destination_uses_up_no_attempt_and_pauses_the_intake() {
    let journal = Journal::default();
    let dl = Arc::new(MemoryDeadLetters::new(journal.clone()));
    let down = Arc::new(AtomicBool::new(false));
    let refused = Arc::new(AtomicU32::new(0));
    let sink = MemorySink::failing("pg", journal.clone(), {
        let (down, refused) = (down.clone(), refused.clone());
        move |m, _| {
            let seq: u64 = m.meta.message_id.as_deref().unwrap()[1..].parse().unwrap();
            if seq >= 40 && down.load(Ordering::SeqCst) {
                refused.fetch_add(1, Ordering::SeqCst);
                Outcome::Unavailable(Failure::unavailable("connection refused"))
            } else {
                Outcome::Ok
            }
        }
    });
    down.store(true, Ordering::SeqCst);
    let pipeline = Pipeline::builder()
        .source(MemorySource::new(
            numbered_messages(400, 8),
            journal.clone(),
        ))
        .key(KeySpec::JsonPointer("/key".into()))
        .partitions(nz(2))
        .max_in_flight(nz(64))
        .retry(RetryPolicy {
            max_attempts: NonZeroU32::new(2).unwrap(),
            ..RetryPolicy::default()
        })
        .sink("pg", sink)
        .dead_letters(dl.clone())
        .build()
        .unwrap();
    let stats = pipeline.stats();
    let run = tokio::spawn(pipeline.run(std::future::pending()));
    // Many tries over ten (virtual) minutes, far more than two attempts' worth.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let received_early = stats.snapshot().received;
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert!(
        refused.load(Ordering::SeqCst) > 100,
        "the sink was tried again and again"
    );
    let during = stats.snapshot();
    assert_eq!(during.dead_lettered, 0, "an outage dead-letters nothing");
    assert_eq!(during.retried, 0, "an outage uses up no attempt");
    assert!(during.unavailable_waits > 0);
    assert_eq!(
        during.received, received_early,
        "the intake takes nothing more while the destination is down"
    );
    assert!(during.received < 400);
    down.store(false, Ordering::SeqCst);
    let report = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the backlog drains once the destination is back")
        .unwrap()
        .unwrap();
    assert_eq!(report.stats.acked, 400);
    assert_eq!(report.stats.dead_lettered, 0);
    assert!(dl.letters().is_empty());
    for (key, seqs) in commits_per_key(&journal) {
        let mut sorted = seqs.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(
            seqs, sorted,
            "key {key}: committed once each, in delivery order"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn transient_failures_still_use_up_attempts_next_to_an_outage() {
    let journal = Journal::default();
    let dl = Arc::new(MemoryDeadLetters::new(journal.clone()));
    // m1 is refused for now on every try; m2 meets an outage on its first five tries.
    let sink = MemorySink::failing("s", journal.clone(), |m, n| {
        match m.meta.message_id.as_deref() {
            Some("m1") => Outcome::Transient(Failure::new("deadlock", "40P01")),
            Some("m2") if n <= 5 => Outcome::Unavailable(Failure::unavailable("refused")),
            _ => Outcome::Ok,
        }
    })
    .partial();
    let report = Pipeline::builder()
        .source(MemorySource::new(numbered_messages(4, 4), journal.clone()))
        .key(KeySpec::JsonPointer("/key".into()))
        .retry(RetryPolicy {
            max_attempts: NonZeroU32::new(3).unwrap(),
            ..RetryPolicy::default()
        })
        .sink("s", sink)
        .dead_letters(dl.clone())
        .build()
        .unwrap()
        .run(std::future::pending())
        .await
        .unwrap();
    assert_eq!(report.stats.acked, 3);
    let letters = dl.letters();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].message.meta.message_id.as_deref(), Some("m1"));
    assert_eq!(letters[0].reason, "retries_exhausted");
    assert_eq!(letters[0].attempts, 3);
}

#[tokio::test]
async fn a_panic_in_a_processor_dead_letters_only_its_message() {
    let journal = Journal::default();
    let dl = Arc::new(MemoryDeadLetters::new(journal.clone()));
    let report = Pipeline::builder()
        .source(MemorySource::new(numbered_messages(50, 5), journal.clone()))
        .key(KeySpec::JsonPointer("/key".into()))
        .partitions(nz(2))
        .map("convert", |m| {
            if m.meta.message_id.as_deref() == Some("m17") {
                panic!("odd value: month 13");
            }
            Ok(Some(m))
        })
        .sink("s", MemorySink::new("s", journal.clone()))
        .dead_letters(dl.clone())
        .build()
        .unwrap()
        .run(std::future::pending())
        .await
        .unwrap();
    assert_eq!(
        report.stats.acked, 49,
        "the partition went on after the panic"
    );
    let letters = dl.letters();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].reason, "panic");
    assert_eq!(letters[0].error, "odd value: month 13");
    assert_eq!(letters[0].stage, "convert");
}

#[tokio::test]
async fn a_panic_in_a_sink_dead_letters_only_the_message_that_causes_it() {
    let journal = Journal::default();
    let dl = Arc::new(MemoryDeadLetters::new(journal.clone()));
    let sink = MemorySink::failing("s", journal.clone(), |m, _| {
        if m.meta.message_id.as_deref() == Some("m23") {
            panic!("cannot encode 2024-02-30");
        }
        Outcome::Ok
    });
    let report = Pipeline::builder()
        .source(MemorySource::new(numbered_messages(60, 3), journal.clone()))
        .key(KeySpec::JsonPointer("/key".into()))
        .partitions(nz(2))
        .sink("s", sink)
        .dead_letters(dl.clone())
        .build()
        .unwrap()
        .run(std::future::pending())
        .await
        .unwrap();
    assert_eq!(report.stats.acked, 59);
    let letters = dl.letters();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].message.meta.message_id.as_deref(), Some("m23"));
    assert_eq!(letters[0].reason, "panic");
    assert!(letters[0].error.contains("2024-02-30"));
    for (key, seqs) in commits_per_key(&journal) {
        let mut sorted = seqs.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(seqs, sorted, "key {key}: once each, in order");
    }
}

/// A source whose acker panics: the panic happens in a partition task, outside any one
/// message's handling, so it kills the task.
struct PanickingAcks(MemorySource);

struct PanicAcker;

impl Acker for PanicAcker {
    fn settle(&self, _settled: Vec<Settled>) {
        panic!("acker broke");
    }
}

#[async_trait]
impl Source for PanickingAcks {
    fn describe(&self) -> String {
        "panicking acks".into()
    }
    async fn recv(&mut self, out: &mut Vec<Delivery>, max: usize) -> Result<bool, SourceError> {
        self.0.recv(out, max).await
    }
    fn acker(&self) -> Arc<dyn Acker> {
        Arc::new(PanicAcker)
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }
}

#[tokio::test]
async fn a_partition_task_that_panics_stops_the_pipeline_with_an_error() {
    let journal = Journal::default();
    let source = MemorySource::new(numbered_messages(10, 2), journal.clone()).keep_open();
    let run = Pipeline::builder()
        .source(PanickingAcks(source))
        .key(KeySpec::JsonPointer("/key".into()))
        .sink("s", MemorySink::new("s", journal.clone()))
        .dead_letters(Arc::new(MemoryDeadLetters::new(journal.clone())))
        .build()
        .unwrap()
        .run(std::future::pending());
    let result = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("a dead partition ends the run at once, not at shutdown");
    match result {
        Err(PipelineError::PartitionFailed(e)) => assert!(e.contains("acker broke"), "{e}"),
        other => panic!("expected a partition failure, got {other:?}"),
    }
}
