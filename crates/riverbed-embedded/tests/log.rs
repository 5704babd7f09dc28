//! The embedded log end to end: append, consume through a pipeline, positions, redelivery after
//! a crash, dead letters and redrive.

use std::sync::Arc;
use std::time::Duration;

use riverbed_core::testing::{Event, Journal, MemorySink};
use std::num::{NonZeroU32, NonZeroUsize};

use riverbed_core::{BatchSettings, Failure, KeySpec, Outcome, Pipeline, RetryPolicy};
use riverbed_embedded::{
    DataKind, Durability, EmbeddedLog, Generator, LogDeadLetters, LogSource, Record, Selection,
    list_dead_letters, list_selected, purge_dead_letters, redrive, redrive_selected,
};

async fn filled_log(dir: &tempfile::TempDir, n: u64) -> EmbeddedLog {
    let log = EmbeddedLog::open(dir.path().join("log.db"), Durability::Normal)
        .await
        .unwrap();
    let records: Vec<Record> = (0..n)
        .map(|i| {
            Record::new(
                Some(format!("k{}", i % 5)),
                format!(r#"{{"id":"m{i}","k":"k{}"}}"#, i % 5),
            )
        })
        .collect();
    log.append("t", records).await.unwrap();
    log
}

fn ids(journal: &Journal) -> Vec<String> {
    journal
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Commit { id, .. } => Some(id),
            _ => None,
        })
        .collect()
}

/// A sink that records the JSON `id` of each message as its message id.
fn id_sink(
    journal: &Journal,
    fail: impl Fn(&str) -> Outcome + Send + Sync + 'static,
) -> MemorySink {
    MemorySink::failing("s", journal.clone(), move |m, _| {
        fail(m.meta.message_id.as_deref().unwrap_or(""))
    })
}

fn with_ids()
-> impl FnMut(riverbed_core::Message) -> Result<Option<riverbed_core::Message>, Failure>
+ Clone
+ Send
+ Sync {
    |mut m: riverbed_core::Message| {
        let id = m
            .pointer("/id")?
            .and_then(|v| v.as_str())
            .map(str::to_owned);
        m.meta.message_id = id;
        Ok(Some(m))
    }
}

#[tokio::test]
async fn consumes_everything_and_commits_the_position() {
    let dir = tempfile::tempdir().unwrap();
    let log = filled_log(&dir, 1000).await;
    let journal = Journal::default();
    let source = LogSource::open(&log, "t", "c1", false).await.unwrap();
    let report = Pipeline::builder()
        .source(source)
        .map("ids", with_ids())
        .sink("s", id_sink(&journal, |_| Outcome::Ok))
        .build()
        .unwrap()
        .run(std::future::pending())
        .await
        .unwrap();
    assert!(report.exhausted && report.drained);
    assert_eq!(report.stats.acked, 1000);
    assert_eq!(ids(&journal).len(), 1000);
    let pos = log.position("c1", "t").await.unwrap();
    assert_eq!(pos.committed, 1000);
    // A second run of the same consumer finds nothing new; another consumer starts over.
    let again = LogSource::open(&log, "t", "c1", false).await.unwrap();
    let j2 = Journal::default();
    let r2 = Pipeline::builder()
        .source(again)
        .sink("s", MemorySink::new("s", j2.clone()))
        .build()
        .unwrap()
        .run(std::future::pending())
        .await
        .unwrap();
    assert_eq!(r2.stats.received, 0);
    let other = LogSource::open(&log, "t", "c2", false).await.unwrap();
    let r3 = Pipeline::builder()
        .source(other)
        .sink("s", MemorySink::new("s", j2))
        .build()
        .unwrap()
        .run(std::future::pending())
        .await
        .unwrap();
    assert_eq!(r3.stats.received, 1000);
}

#[tokio::test]
async fn unsettled_messages_come_back_marked_redelivered() {
    let dir = tempfile::tempdir().unwrap();
    let log = filled_log(&dir, 100).await;
    // A sink that never commits m50: the position stops at 50 and everything after it is
    // unsettled when the run is cut short.
    let journal = Journal::default();
    let source = LogSource::open(&log, "t", "c", true).await.unwrap();
    let pipeline = Pipeline::builder()
        .source(source)
        .map("ids", with_ids())
        .key(KeySpec::Source)
        .sink_with(
            "s",
            "main",
            Arc::new(id_sink(&journal, |id| {
                if id == "m50" {
                    Outcome::Transient(Failure::unavailable("down"))
                } else {
                    Outcome::Ok
                }
            })),
            Some(BatchSettings {
                max_size: NonZeroUsize::new(1).unwrap(),
                max_wait: Duration::ZERO,
                coalesce: false,
            }),
        )
        .retry(RetryPolicy {
            max_attempts: NonZeroU32::new(u32::MAX).unwrap(),
            initial_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(20),
            ..RetryPolicy::default()
        })
        .shutdown_grace(Duration::from_millis(200))
        .build()
        .unwrap();
    let stats = pipeline.stats();
    let run = tokio::spawn(pipeline.run(async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while stats.snapshot().acked < 80 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }));
    let report = run.await.unwrap().unwrap();
    assert!(
        !report.drained,
        "m50 never commits, so the stop cannot drain"
    );
    let pos = log.position("c", "t").await.unwrap();
    assert_eq!(
        pos.committed, 50,
        "position stops below the unsettled offset"
    );
    assert_eq!(pos.delivered, 100);

    let journal2 = Journal::default();
    let again = LogSource::open(&log, "t", "c", false).await.unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let report = Pipeline::builder()
        .source(again)
        .map("inspect", move |m| {
            s2.lock()
                .unwrap()
                .push((m.meta.position.unwrap(), m.meta.redelivered, m.meta.attempt));
            Ok(Some(m))
        })
        .sink("s", MemorySink::new("s", journal2))
        .build()
        .unwrap()
        .run(std::future::pending())
        .await
        .unwrap();
    assert_eq!(report.stats.acked, 50);
    let mut seen = seen.lock().unwrap().clone();
    seen.sort();
    assert_eq!(seen.first().unwrap().0, 51);
    assert!(
        seen.iter()
            .all(|(_, redelivered, attempt)| *redelivered && *attempt == 2)
    );
}

#[tokio::test]
async fn dead_letters_are_stored_listed_and_redriven() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(dir.path().join("log.db"), Durability::Full)
        .await
        .unwrap();
    let mut generator = Generator::new(DataKind::Sensors, 1, 4, Some(5));
    let records: Vec<Record> = (0..20).map(|_| generator.next_record()).collect();
    log.append("readings", records).await.unwrap();
    let source = LogSource::open(&log, "readings", "c", false).await.unwrap();
    let report = Pipeline::builder()
        .source(source)
        .key(KeySpec::JsonPointer("/sensor_id".into()))
        .sink("s", MemorySink::new("s", Journal::default()))
        .build()
        .unwrap()
        .run(std::future::pending())
        .await
        .unwrap();
    assert_eq!((report.stats.acked, report.stats.dead_lettered), (16, 4));
    let letters = list_dead_letters(&log, Some("readings"), 100)
        .await
        .unwrap();
    let reasons: Vec<&str> = letters.iter().map(|l| l.letter.reason.as_str()).collect();
    assert_eq!(
        reasons,
        vec![
            "malformed_payload",
            "missing_key",
            "malformed_payload",
            "missing_key"
        ]
    );
    assert!(
        letters
            .iter()
            .all(|l| l.letter.message.meta.position.is_some())
    );
    assert_eq!(
        log.position("c", "readings").await.unwrap().committed,
        20,
        "dead letters settle the position"
    );

    let moved = redrive(&log, "readings", Some(vec![letters[1].id]))
        .await
        .unwrap();
    assert_eq!(moved, 1);
    assert_eq!(list_dead_letters(&log, None, 100).await.unwrap().len(), 3);
    assert_eq!(log.topic_stats("readings").await.unwrap(), (21, 21));
    let _ = LogDeadLetters::new(&log, "readings");

    // Selections: every condition given must hold; a purge deletes only what it selects.
    let select = |reason: Option<&str>, stage: Option<&str>, since_ms: Option<i64>| Selection {
        reason: reason.map(str::to_owned),
        stage: stage.map(str::to_owned),
        since_ms,
        ..Selection::default()
    };
    let count = async |s: Selection| list_selected(&log, &s, 100).await.unwrap().len();
    assert_eq!(
        count(select(Some("malformed_payload"), None, None)).await,
        2
    );
    assert_eq!(count(select(None, Some("key"), None)).await, 3);
    assert_eq!(count(select(None, Some("other"), None)).await, 0);
    assert_eq!(count(select(None, None, Some(0))).await, 3);
    assert_eq!(count(select(None, None, Some(i64::MAX))).await, 0);
    let purged = purge_dead_letters(&log, select(Some("missing_key"), None, None))
        .await
        .unwrap();
    assert_eq!(purged, 1);
    let moved = redrive_selected(&log, select(Some("malformed_payload"), None, None))
        .await
        .unwrap();
    assert_eq!(moved, 2);
    assert_eq!(count(Selection::default()).await, 0);
    assert_eq!(log.topic_stats("readings").await.unwrap(), (23, 23));
}

#[tokio::test]
async fn concurrent_appends_share_commits() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(dir.path().join("log.db"), Durability::Full)
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for t in 0..8 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..50 {
                log.append("t", vec![Record::new(None, format!("{t}-{i}"))])
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(log.topic_stats("t").await.unwrap().0, 400);
    // Eight appenders waiting for durability at once: their appends share transactions.
    assert!(
        log.commits() <= 200,
        "400 appends from 8 concurrent appenders took {} commits",
        log.commits()
    );
}

#[tokio::test]
async fn json_lines_files_hold_every_committed_message() {
    use riverbed_core::Sink;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let sink = riverbed_embedded::JsonLinesSink::new(
        riverbed_embedded::LineTarget::File(path.clone()),
        true,
    );
    let batch: Vec<riverbed_core::Message> = (0..3)
        .map(|i| riverbed_core::Message::new(format!(r#"{{"n":{i}}}"#)).with_key(format!("k{i}")))
        .collect();
    assert_eq!(
        sink.write(&batch).await,
        riverbed_core::BatchOutcome::Committed
    );
    assert_eq!(
        sink.write(&batch[..1]).await,
        riverbed_core::BatchOutcome::Committed
    );
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[2]["payload"]["n"], 2);
    assert_eq!(lines[2]["key"], "k2");
}

#[tokio::test(start_paused = true)]
async fn the_generator_keeps_its_rate_and_count() {
    use riverbed_core::Source;
    let mut source = riverbed_embedded::GenerateSource::new(
        Generator::new(DataKind::Transactions, 9, 3, None),
        Some(500),
        Some(100),
    );
    let started = tokio::time::Instant::now();
    let mut out = Vec::new();
    while source.recv(&mut out, 64).await.unwrap() {}
    assert_eq!(out.len(), 500);
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(4900) && elapsed <= Duration::from_millis(5100),
        "{elapsed:?}"
    );
    let providers: std::collections::HashSet<_> =
        out.iter().map(|d| d.message.key.clone().unwrap()).collect();
    assert_eq!(providers.len(), 3);
}
