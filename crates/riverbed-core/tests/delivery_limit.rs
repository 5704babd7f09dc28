//! Poison-pill protection: a message delivered more than `max_deliveries` times without being
//! settled is dead-lettered (`delivery_limit`) without being processed again.

use std::num::NonZeroU32;
use std::sync::Arc;

use riverbed_core::testing::{
    Event, Journal, MemoryDeadLetters, MemorySink, MemorySource, numbered_messages,
};
use riverbed_core::{KeySpec, Pipeline};

#[tokio::test]
async fn a_message_delivered_too_often_is_dead_lettered_unprocessed() {
    let journal = Journal::default();
    let dl = Arc::new(MemoryDeadLetters::new(journal.clone()));
    let mut messages = numbered_messages(4, 2);
    messages[1].meta.deliveries = 4;
    messages[2].meta.deliveries = 3;
    let report = Pipeline::builder()
        .source(MemorySource::new(messages, journal.clone()))
        .key(KeySpec::JsonPointer("/key".into()))
        .max_deliveries(NonZeroU32::new(3).unwrap())
        .sink("s", MemorySink::new("s", journal.clone()))
        .dead_letters(dl.clone())
        .build()
        .unwrap()
        .run(std::future::pending())
        .await
        .unwrap();
    assert_eq!((report.stats.acked, report.stats.dead_lettered), (3, 1));
    let letters = dl.letters();
    assert_eq!(letters[0].message.meta.message_id.as_deref(), Some("m1"));
    assert_eq!(letters[0].reason, "delivery_limit");
    assert_eq!(letters[0].attempts, 4);
    assert_eq!(letters[0].message.key.as_deref(), Some("k1"));
    let written: Vec<String> = journal
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Commit { id, .. } => Some(id),
            _ => None,
        })
        .collect();
    assert!(!written.contains(&"m1".to_owned()), "{written:?}");
    assert!(
        written.contains(&"m2".to_owned()),
        "at the limit still processed"
    );
}
