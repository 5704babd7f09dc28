//! Every dead letter takes the runtime's one path: the configured destination, the
//! dead-letter count and its log line, also for letters the source makes itself (a broker
//! retry it gives up).

mod common;

use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::Arc;
use std::time::Duration;

use common::{Raw, Recorder, available, broker, source_config, spawn_pipeline, unique};
use lapin::types::FieldTable;
use riverbed_amqp::AmqpSource;
use riverbed_core::testing::{Journal, MemoryDeadLetters};
use riverbed_core::{Failure, Outcome, Pipeline, RetryMode, RetryPolicy};

const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_given_up_broker_retry_goes_to_the_configured_dead_letter_destination() {
    if !available() {
        return;
    }
    let _shared = broker(false).await;
    common::bounded(async {
        let queue = unique("given-up-routed");
        let _cleanup = common::DeleteOnPanic(queue.clone());
        let raw = Raw::connect().await;
        raw.declare(&queue, FieldTable::default()).await;
        // The retry tiers exist with other arguments: the broker refuses them for good.
        let tiers: Vec<String> = [64, 128]
            .iter()
            .map(|ms| format!("{queue}.retry.{ms}ms"))
            .collect();
        for t in &tiers {
            raw.declare(t, FieldTable::default()).await;
        }
        raw.publish("", &queue, "flaky", r#"{"k":"a"}"#.into())
            .await;
        raw.publish("", &queue, "steady", r#"{"k":"b"}"#.into())
            .await;
        raw.channel.wait_for_confirms().await.unwrap();
        let sink = Recorder::failing(|seen| {
            if seen.meta.message_id.as_deref() == Some("flaky") {
                Outcome::Transient(Failure::unavailable("downstream down"))
            } else {
                Outcome::Ok
            }
        });
        let source =
            AmqpSource::new(source_config(&queue, "[retry]\nhold_limit = \"1s\"")).unwrap();
        let letters = Arc::new(MemoryDeadLetters::new(Journal::default()));
        let pipeline = Pipeline::builder()
            .source(source)
            .partitions(NonZeroUsize::new(1).unwrap())
            .retry(RetryPolicy {
                max_attempts: NonZeroU32::new(3).unwrap(),
                initial_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_millis(100),
                mode: RetryMode::Broker,
            })
            .sink("recorder", sink)
            .dead_letters(letters.clone())
            .build()
            .unwrap();
        let stats = pipeline.stats();
        let (stop, run) = spawn_pipeline(pipeline);
        let l = letters.clone();
        common::wait_until("the given-up retry is dead-lettered", LIMIT, || {
            !l.letters().is_empty()
        })
        .await;
        let letter = letters.letters()[0].clone();
        assert_eq!(letter.reason, "retry_unavailable");
        assert_eq!(letter.message.meta.message_id.as_deref(), Some("flaky"));
        assert!(letter.error.contains("downstream down"), "{}", letter.error);
        let s = stats.clone();
        common::wait_until("the dead letter counted", LIMIT, || {
            s.snapshot().dead_lettered == 1
        })
        .await;
        let _ = stop.send(());
        assert!(run.await.unwrap().drained);
        let dlq = format!("{queue}.dlq");
        let beside = raw.get(&dlq).await;
        assert!(
            beside.is_none(),
            "nothing goes to {dlq} when another destination is configured"
        );
        assert_eq!(letters.letters().len(), 1, "exactly one letter");
        assert_eq!(raw.ready(&queue).await, 0, "nothing left behind");
        let mut all = tiers.clone();
        all.extend([queue.clone(), dlq]);
        raw.delete(&all).await;
    })
    .await;
}
