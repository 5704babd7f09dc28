//! Coalescing batches: only the last message of each key is written, and every delivery of the
//! batch settles with it, after it was committed (or is dead-lettered with it).

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use riverbed_core::testing::{Event, Journal, MemoryDeadLetters, MemorySource, numbered_messages};
use riverbed_core::{
    BatchOutcome, BatchSettings, Failure, KeySpec, Message, Outcome, Pipeline, Settlement, Sink,
};

/// Records the message ids of every batch; fails for good the messages its rule names.
#[derive(Clone, Default)]
struct Batches {
    written: Arc<Mutex<Vec<Vec<String>>>>,
    refuse: Option<&'static str>,
}

#[async_trait::async_trait]
impl Sink for Batches {
    async fn write(&self, batch: &[Message]) -> BatchOutcome {
        let ids = batch.iter().map(|m| m.meta.message_id.clone().unwrap());
        self.written.lock().unwrap().push(ids.collect());
        BatchOutcome::Each(
            batch
                .iter()
                .map(|m| match self.refuse {
                    Some(id) if m.meta.message_id.as_deref() == Some(id) => {
                        Outcome::Permanent(Failure::new("refused", "refused by the test"))
                    }
                    _ => Outcome::Ok,
                })
                .collect(),
        )
    }
}

async fn run(sink: Batches, journal: &Journal) -> riverbed_core::Report {
    Pipeline::builder()
        .source(MemorySource::new(numbered_messages(30, 3), journal.clone()))
        .partitions(NonZeroUsize::new(1).unwrap())
        .key(KeySpec::JsonPointer("/key".into()))
        .sink_with(
            "latest",
            "main",
            Arc::new(sink),
            Some(BatchSettings {
                max_size: NonZeroUsize::new(1000).unwrap(),
                max_wait: Duration::from_millis(200),
                coalesce: true,
            }),
        )
        .dead_letters(Arc::new(MemoryDeadLetters::new(journal.clone())))
        .build()
        .unwrap()
        .run(std::future::pending())
        .await
        .unwrap()
}

fn settled(journal: &Journal) -> Vec<(String, Settlement)> {
    journal
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Settle { id, settlement } => Some((id, settlement)),
            _ => None,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn only_the_last_message_per_key_is_written_and_every_delivery_is_acked() {
    let journal = Journal::default();
    let sink = Batches::default();
    let report = run(sink.clone(), &journal).await;
    assert_eq!(report.stats.acked, 30, "{:?}", report.stats);
    let written = sink.written.lock().unwrap().clone();
    assert_eq!(
        written,
        vec![vec!["m27", "m28", "m29"]],
        "one batch, the last per key"
    );
    let settled = settled(&journal);
    assert_eq!(settled.len(), 30);
    assert!(
        settled.iter().all(|(_, s)| *s == Settlement::Ack),
        "{settled:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_deliveries_of_a_refused_message_are_dead_lettered_with_it() {
    let journal = Journal::default();
    let sink = Batches {
        refuse: Some("m28"),
        ..Batches::default()
    };
    let report = run(sink, &journal).await;
    // m28 stood for k1: m1, m4, ... m28, ten deliveries.
    assert_eq!(report.stats.dead_lettered, 10, "{:?}", report.stats);
    assert_eq!(report.stats.acked, 20, "{:?}", report.stats);
    let mut letters: Vec<String> = journal
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::DeadLetter { id, reason } => {
                assert_eq!(reason, "refused");
                Some(id)
            }
            _ => None,
        })
        .collect();
    letters.sort_by_key(|id| id[1..].parse::<u32>().unwrap());
    let k1: Vec<String> = (0..10).map(|i| format!("m{}", 3 * i + 1)).collect();
    assert_eq!(letters, k1);
}
