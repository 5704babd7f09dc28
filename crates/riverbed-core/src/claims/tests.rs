//! Claimed sinks over an in-memory store: each message written once by one of two instances.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::time::Instant;

use super::*;

/// An id's owner (`None` once done) and when its claim expires.
type Entry = (Option<String>, Option<Instant>);

/// Claims with expiry, like Redis `SET NX PX`.
#[derive(Default)]
struct MemoryStore {
    entries: Mutex<HashMap<String, Entry>>,
    refuse_complete: AtomicBool,
}

struct Instance {
    store: Arc<MemoryStore>,
    owner: String,
    ttl: Duration,
}

#[async_trait]
impl ClaimStore for Instance {
    async fn claim(&self, ids: &[String]) -> Result<Vec<Claim>, Failure> {
        let mut entries = self.store.entries.lock().unwrap();
        let now = Instant::now();
        let mut out = Vec::new();
        for id in ids {
            let live = entries
                .get(id)
                .filter(|(_, until)| until.is_none_or(|u| u > now))
                .cloned();
            let claim = match live {
                None => Claim::Won,
                Some((None, _)) => Claim::Done,
                Some((Some(o), _)) if o == self.owner => Claim::Won,
                Some(_) => Claim::Busy,
            };
            if claim == Claim::Won {
                entries.insert(id.clone(), (Some(self.owner.clone()), Some(now + self.ttl)));
            }
            out.push(claim);
            if claim == Claim::Busy {
                break;
            }
        }
        Ok(out)
    }

    async fn complete(&self, ids: &[String]) -> Result<(), Failure> {
        if self.store.refuse_complete.load(Ordering::SeqCst) {
            return Err(Failure::unavailable("store down"));
        }
        let mut entries = self.store.entries.lock().unwrap();
        for id in ids {
            entries.insert(id.clone(), (None, None));
        }
        Ok(())
    }
}

/// Records what it commits, shared by every instance: the destination.
#[derive(Default)]
struct Table {
    rows: Mutex<Vec<String>>,
}

struct Writer(Arc<Table>);

#[async_trait]
impl Sink for Writer {
    async fn write(&self, batch: &[Message]) -> BatchOutcome {
        let mut rows = self.0.rows.lock().unwrap();
        rows.extend(batch.iter().map(|m| m.meta.message_id.clone().unwrap()));
        BatchOutcome::Committed
    }
}

fn message(id: u32) -> Message {
    let mut m = Message::new(format!("{{\"n\":{id}}}"));
    m.meta.message_id = Some(format!("m{id}"));
    m
}

fn sink(store: &Arc<MemoryStore>, owner: &str, table: &Arc<Table>) -> ClaimedSink {
    let instance = Instance {
        store: store.clone(),
        owner: owner.to_owned(),
        ttl: Duration::from_secs(30),
    };
    ClaimedSink::new(
        Arc::new(Writer(table.clone())),
        Arc::new(instance),
        ClaimId::MessageId,
    )
}

/// Writes `batch` until nothing in it waits any more, as the runtime does.
async fn settle(sink: &ClaimedSink, batch: Vec<Message>) {
    let mut batch = batch;
    while !batch.is_empty() {
        let outcome = sink.write(&batch).await;
        batch = batch
            .into_iter()
            .enumerate()
            .filter(|(i, _)| matches!(outcome.get(*i), Outcome::Unavailable(_)))
            .map(|(_, m)| m)
            .collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn two_instances_with_the_same_stream_write_each_message_once_in_order() {
    let store = Arc::new(MemoryStore::default());
    let table = Arc::new(Table::default());
    let (a, b) = (sink(&store, "a", &table), sink(&store, "b", &table));
    let stream: Vec<Message> = (0..200).map(message).collect();
    let run_a = async {
        for chunk in stream.chunks(7) {
            settle(&a, chunk.to_vec()).await;
        }
    };
    let run_b = async {
        for chunk in stream.chunks(5) {
            settle(&b, chunk.to_vec()).await;
        }
    };
    tokio::join!(run_a, run_b);
    let rows = table.rows.lock().unwrap().clone();
    let expected: Vec<String> = (0..200).map(|i| format!("m{i}")).collect();
    assert_eq!(rows, expected, "every message once, in stream order");
}

#[tokio::test(start_paused = true)]
async fn copies_of_a_message_in_one_batch_are_written_once() {
    let store = Arc::new(MemoryStore::default());
    let table = Arc::new(Table::default());
    let a = sink(&store, "a", &table);
    // A replay overlapping live traffic: m1 and m2 twice in the same batch.
    let batch = vec![message(1), message(2), message(1), message(3), message(2)];
    let outcome = a.write(&batch).await;
    assert!((0..5).all(|i| outcome.get(i) == Outcome::Ok), "{outcome:?}");
    assert_eq!(*table.rows.lock().unwrap(), ["m1", "m2", "m3"]);
}

#[tokio::test(start_paused = true)]
async fn a_claim_left_by_a_dead_instance_is_taken_over_after_it_expires() {
    let store = Arc::new(MemoryStore::default());
    let table = Arc::new(Table::default());
    let dead = Instance {
        store: store.clone(),
        owner: "dead".into(),
        ttl: Duration::from_secs(30),
    };
    assert_eq!(dead.claim(&["m1".into()]).await.unwrap(), vec![Claim::Won]);
    let alive = sink(&store, "alive", &table);
    let started = Instant::now();
    let first = alive.write(&[message(1), message(2)]).await;
    assert!(matches!(first.get(0), Outcome::Unavailable(f) if f.reason == "claimed_elsewhere"));
    assert!(
        matches!(first.get(1), Outcome::Unavailable(_)),
        "a later message waits too: it must not overtake"
    );
    settle(&alive, vec![message(1), message(2)]).await;
    assert!(started.elapsed() >= Duration::from_secs(30));
    assert_eq!(*table.rows.lock().unwrap(), vec!["m1", "m2"]);
}

#[tokio::test(start_paused = true)]
async fn a_committed_write_the_store_could_not_mark_is_never_written_again() {
    let store = Arc::new(MemoryStore::default());
    let table = Arc::new(Table::default());
    let a = sink(&store, "a", &table);
    store.refuse_complete.store(true, Ordering::SeqCst);
    let outcome = a.write(&[message(1)]).await;
    assert!(matches!(outcome.get(0), Outcome::Unavailable(_)));
    assert!(matches!(
        a.write(&[message(1)]).await.get(0),
        Outcome::Unavailable(_)
    ));
    store.refuse_complete.store(false, Ordering::SeqCst);
    assert_eq!(a.write(&[message(1)]).await.get(0), Outcome::Ok);
    let b = sink(&store, "b", &table);
    assert_eq!(b.write(&[message(1)]).await.get(0), Outcome::Ok);
    assert_eq!(*table.rows.lock().unwrap(), vec!["m1"], "written once");
}

#[tokio::test]
async fn a_message_without_an_id_is_refused_with_a_reason() {
    let store = Arc::new(MemoryStore::default());
    let table = Arc::new(Table::default());
    let a = sink(&store, "a", &table);
    let outcome = a.write(&[Message::new("{}"), message(1)]).await;
    assert!(matches!(outcome.get(0), Outcome::Permanent(f) if f.reason == "missing_dedup_id"));
    assert_eq!(outcome.get(1), Outcome::Ok);
    let by_field = ClaimId::Pointer("/n".into());
    assert_eq!(by_field.of(&message(7)).unwrap(), "7");
}
