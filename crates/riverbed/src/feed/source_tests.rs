//! The wrapper on an in-memory source: control messages never reach the pipeline, and a good
//! alive becomes safe only when every delivery before it is settled.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use riverbed_core::testing::{Journal, MemorySource};
use riverbed_core::{Message, Settled, Settlement, Source};
use serde_json::json;
use tokio::sync::Notify;

use super::FeedSource;
use crate::feed::producer::{Timing, Tracker};
use crate::feed::{Messages, Shared};

fn messages() -> Arc<Messages> {
    Arc::new(Messages {
        type_field: "/type".into(),
        alive: "alive".into(),
        snapshot_complete: "snapshot_complete".into(),
        producer: "/producer".into(),
        timestamp: "/timestamp".into(),
        subscribed: "/subscribed".into(),
        request_id: "/request_id".into(),
    })
}

fn msg(id: &str, body: serde_json::Value) -> Message {
    let mut m = Message::from_json(body);
    m.meta.message_id = Some(id.into());
    m
}

fn shared() -> Arc<Shared> {
    let timing = Timing {
        alive_timeout: Duration::from_secs(20),
        min_interval: Duration::from_secs(30),
        recovery_timeout: Duration::from_secs(300),
    };
    let tracker = Tracker::new(
        &["1".to_owned()],
        &BTreeMap::new(),
        timing,
        Box::new(|| 42),
        Instant::now(),
    );
    Arc::new(Shared {
        tracker: Mutex::new(tracker),
        wake: Notify::new(),
        safe: Mutex::new(BTreeMap::new()),
        sessions: Box::new(|| 1),
    })
}

fn ack(token: u64) -> Settled {
    Settled {
        token,
        settlement: Settlement::Ack,
        message: None,
    }
}

#[tokio::test]
async fn good_alives_are_safe_once_every_earlier_delivery_is_settled() {
    let input = vec![
        msg(
            "a1",
            json!({"type": "alive", "producer": 1, "timestamp": 100, "subscribed": 1}),
        ),
        msg(
            "s",
            json!({"type": "snapshot_complete", "producer": 1, "request_id": 42}),
        ),
        msg(
            "o1",
            json!({"type": "odds_change", "producer": 1, "seq": 1}),
        ),
        msg(
            "o2",
            json!({"type": "odds_change", "producer": 1, "seq": 2}),
        ),
        msg(
            "a2",
            json!({"type": "alive", "producer": 1, "timestamp": 200, "subscribed": 1}),
        ),
        msg(
            "o3",
            json!({"type": "odds_change", "producer": 1, "seq": 3}),
        ),
        msg("bad", json!({"type": "alive", "producer": 1})),
    ];
    let journal = Journal::default();
    let shared = shared();
    let mut source = FeedSource::new(
        MemorySource::new(input, journal.clone()),
        shared.clone(),
        messages(),
    );
    let mut out = Vec::new();
    assert!(source.recv(&mut out, 100).await.unwrap());
    let ids: Vec<_> = out
        .iter()
        .map(|d| d.message.meta.message_id.clone().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["o1", "o2", "o3"],
        "control messages are the tracker's"
    );
    let acker = source.acker();
    // The first alive came while down (it asked for recovery 42): never stored. The
    // snapshot brought the producer up; the second alive is good, safe after o1 and o2.
    acker.settle(vec![ack(out[1].token)]);
    assert!(shared.safe.lock().unwrap().is_empty(), "o1 is not settled");
    acker.settle(vec![ack(out[0].token)]);
    assert_eq!(
        *shared.safe.lock().unwrap(),
        BTreeMap::from([("1".to_owned(), 200)])
    );
    let settled = journal.events().len();
    assert!(
        settled >= 5,
        "control messages and data settled with the source: {settled}"
    );
}
