//! Restarting a consumer: what was delivered before the crash but not settled comes back, every
//! offset of it, however the redeliveries interleave with their settlements.

use riverbed_core::{Settled, Settlement, Source};
use riverbed_embedded::{Durability, EmbeddedLog, LogSource, Record};

async fn log_of(dir: &tempfile::TempDir, n: u64) -> EmbeddedLog {
    let log = EmbeddedLog::open(dir.path().join("log.db"), Durability::Normal)
        .await
        .unwrap();
    let records = (0..n)
        .map(|i| Record::new(None, format!(r#"{{"n":{i}}}"#)))
        .collect();
    log.append("t", records).await.unwrap();
    log
}

/// Receives up to `max` deliveries and returns their offsets.
async fn take(source: &mut LogSource, max: usize) -> Vec<u64> {
    let mut out = Vec::new();
    source.recv(&mut out, max).await.unwrap();
    out.iter().map(|d| d.token).collect()
}

fn ack(source: &LogSource, offsets: &[u64]) {
    let settled = offsets
        .iter()
        .map(|&token| Settled {
            token,
            settlement: Settlement::Ack,
            message: None,
        })
        .collect();
    source.acker().settle(settled);
}

#[tokio::test]
async fn settling_the_first_redeliveries_does_not_commit_past_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_of(&dir, 10).await;
    // First run: all ten delivered, none settled, then a stop that writes the position.
    let mut first = LogSource::open(&log, "t", "c", false).await.unwrap();
    assert_eq!(take(&mut first, 10).await, (1..=10).collect::<Vec<_>>());
    first.close().await.unwrap();
    let pos = log.position("c", "t").await.unwrap();
    assert_eq!((pos.committed, pos.delivered), (0, 10));

    // Second run: the first three come back and settle before the next read is registered.
    let mut second = LogSource::open(&log, "t", "c", false).await.unwrap();
    assert_eq!(take(&mut second, 3).await, vec![1, 2, 3]);
    ack(&second, &[1, 2, 3]);
    second.close().await.unwrap();
    let pos = log.position("c", "t").await.unwrap();
    assert_eq!(pos.committed, 3, "offsets 4..=10 were not re-delivered yet");
    assert_eq!(pos.delivered, 10, "the high-water mark is kept");

    // Third run (after a second crash): nothing is skipped, and 4..=10 are still redeliveries.
    let mut third = LogSource::open(&log, "t", "c", false).await.unwrap();
    let mut out = Vec::new();
    third.recv(&mut out, 100).await.unwrap();
    let offsets: Vec<u64> = out.iter().map(|d| d.token).collect();
    assert_eq!(offsets, (4..=10).collect::<Vec<_>>());
    assert!(out.iter().all(|d| d.message.meta.redelivered));
    third.close().await.unwrap();
}

#[tokio::test]
async fn a_message_that_crashes_every_run_ends_as_a_delivery_limit_dead_letter() {
    use riverbed_core::testing::{Event, Journal, MemorySink};
    use riverbed_embedded::list_dead_letters;
    let dir = tempfile::tempdir().unwrap();
    let log = log_of(&dir, 1).await;
    // Twenty runs take the poison message and die before settling it (the process crashes
    // while handling it: no settlement, no close).
    for run in 1..=20u32 {
        let mut source = LogSource::open(&log, "t", "c", false).await.unwrap();
        let mut out = Vec::new();
        source.recv(&mut out, 10).await.unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(
            out[0].message.meta.deliveries, run,
            "counted across restarts"
        );
        drop(source);
    }
    log.append("t", vec![Record::new(None, r#"{"n":1}"#)])
        .await
        .unwrap();
    // The 21st delivery is over the default limit of 20: dead-lettered, not processed again.
    let journal = Journal::default();
    let source = LogSource::open(&log, "t", "c", false).await.unwrap();
    let report = riverbed_core::Pipeline::builder()
        .source(source)
        .sink("s", MemorySink::new("s", journal.clone()))
        .build()
        .unwrap()
        .run(std::future::pending())
        .await
        .unwrap();
    assert_eq!((report.stats.acked, report.stats.dead_lettered), (1, 1));
    let commits = journal
        .events()
        .into_iter()
        .filter(|e| matches!(e, Event::Commit { .. }))
        .count();
    assert_eq!(commits, 1, "only the healthy message reached the sink");
    let letters = list_dead_letters(&log, Some("t"), 10).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].letter.reason, "delivery_limit");
    assert_eq!(letters[0].letter.message.meta.position, Some(1));
    assert_eq!(letters[0].letter.attempts, 21);
    assert_eq!(log.position("c", "t").await.unwrap().committed, 2);
}

#[tokio::test]
async fn reads_reserve_the_delivered_mark_ahead_and_a_clean_close_writes_it_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_of(&dir, 5000).await;
    let before = log.commits();
    let mut source = LogSource::open(&log, "t", "c", false).await.unwrap();
    let mut taken = 0;
    while taken < 3000 {
        taken += take(&mut source, 256).await.len();
    }
    assert_eq!(
        log.commits() - before,
        1,
        "one stored mark covers the next few thousand reads"
    );
    assert!(log.position("c", "t").await.unwrap().delivered >= 3000);
    source.close().await.unwrap();
    let pos = log.position("c", "t").await.unwrap();
    assert_eq!(
        pos.delivered, taken as u64,
        "a clean close stores what was handed out"
    );
}
