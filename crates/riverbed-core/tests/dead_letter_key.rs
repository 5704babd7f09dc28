//! A dead letter keeps the key the runtime extracted from its message.

use std::sync::Arc;

use riverbed_core::testing::{
    Journal, MemoryDeadLetters, MemorySink, MemorySource, numbered_messages,
};
use riverbed_core::{Failure, KeySpec, Outcome, Pipeline};

#[tokio::test]
async fn a_dead_letter_carries_the_extracted_key() {
    let journal = Journal::default();
    let dl = Arc::new(MemoryDeadLetters::new(journal.clone()));
    let sink = MemorySink::failing("s", journal.clone(), |m, _| {
        if m.meta.message_id.as_deref() == Some("m4") {
            Outcome::Permanent(Failure::rejected("bad row"))
        } else {
            Outcome::Ok
        }
    });
    let report = Pipeline::builder()
        .source(MemorySource::new(numbered_messages(6, 3), journal.clone()))
        .key(KeySpec::JsonPointer("/key".into()))
        .sink("s", sink)
        .dead_letters(dl.clone())
        .build()
        .unwrap()
        .run(std::future::pending())
        .await
        .unwrap();
    assert_eq!(report.stats.dead_lettered, 1);
    let letters = dl.letters();
    assert_eq!(letters[0].message.meta.message_id.as_deref(), Some("m4"));
    assert_eq!(letters[0].message.key.as_deref(), Some("k1"));
}
