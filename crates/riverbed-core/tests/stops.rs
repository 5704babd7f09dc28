//! A stop ends the process even when a connector never finishes closing: the source's and each
//! sink's close get at most the grace period.

use std::sync::Arc;
use std::time::Duration;

use riverbed_core::testing::{
    Journal, MemoryDeadLetters, MemorySink, MemorySource, numbered_messages,
};
use riverbed_core::{Acker, Delivery, Failure, Message, Pipeline, Sink, Source, SourceError};

/// A memory source whose close never returns (a broker that stopped answering).
struct NeverCloses(MemorySource);

#[async_trait::async_trait]
impl Source for NeverCloses {
    fn describe(&self) -> String {
        "a source that never closes".into()
    }

    async fn recv(&mut self, out: &mut Vec<Delivery>, max: usize) -> Result<bool, SourceError> {
        self.0.recv(out, max).await
    }

    fn acker(&self) -> Arc<dyn Acker> {
        self.0.acker()
    }

    async fn close(&mut self) -> Result<(), SourceError> {
        std::future::pending().await
    }
}

/// A memory sink whose close never returns.
struct SinkNeverCloses(MemorySink);

#[async_trait::async_trait]
impl Sink for SinkNeverCloses {
    async fn write(&self, batch: &[Message]) -> riverbed_core::BatchOutcome {
        self.0.write(batch).await
    }

    async fn close(&self) -> Result<(), Failure> {
        std::future::pending().await
    }
}

#[tokio::test(start_paused = true)]
async fn a_connector_that_never_closes_cannot_hold_the_end_of_the_run() {
    let journal = Journal::default();
    let sink = MemorySink::new("memory", journal.clone());
    let pipeline = Pipeline::builder()
        .source(NeverCloses(MemorySource::new(
            numbered_messages(100, 4),
            journal.clone(),
        )))
        .sink("memory", SinkNeverCloses(sink))
        .shutdown_grace(Duration::from_secs(3))
        .dead_letters(Arc::new(MemoryDeadLetters::new(journal.clone())))
        .build()
        .unwrap();
    let report = tokio::time::timeout(
        Duration::from_secs(60),
        pipeline.run(std::future::pending()),
    )
    .await
    .expect("the run ends once each close had its grace period")
    .unwrap();
    assert!(report.exhausted, "{report:?}");
    assert_eq!(
        report.stats.acked, 100,
        "everything settled before the closes"
    );
    assert!(
        !report.drained,
        "a source that did not close may not have passed on its last acknowledgements"
    );
}
