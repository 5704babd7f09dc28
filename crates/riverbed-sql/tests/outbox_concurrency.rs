//! The outbox under concurrency: producers on their own connections committing out of id
//! order while two relays claim; nothing lost, nothing twice, each entity in version order.

#[path = "outbox/helpers.rs"]
mod helpers;
mod support;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use helpers::*;
use riverbed_core::Source;
use riverbed_sql::{Outbox, OutboxSource};
use serde_json::json;
use support::*;

/// A relay loop for the concurrency test: claims, records each delivery in `seen` (in the
/// order all relays received them), acknowledges, until `stop`.
async fn relay_loop(
    mut source: OutboxSource,
    seen: std::sync::Arc<std::sync::Mutex<Vec<(String, i64, u64)>>>,
    stop: stop_flag::Stop,
) -> OutboxSource {
    loop {
        let mut out = Vec::new();
        tokio::select! {
            r = source.recv(&mut out, 50) => { r.unwrap(); }
            _ = stop.wait() => return source,
        }
        {
            let mut s = seen.lock().unwrap();
            for d in &out {
                s.push((d.message.key.clone().unwrap(), version(d), d.token));
            }
        }
        ack(&source, &out);
    }
}

mod stop_flag {
    //! A stop flag that can be awaited.
    use std::sync::Arc;
    use tokio::sync::watch;

    /// Cloneable; `wait` completes once `stop` was called.
    #[derive(Clone)]
    pub struct Stop(Arc<watch::Sender<bool>>, watch::Receiver<bool>);

    impl Stop {
        pub fn new() -> Self {
            let (tx, rx) = watch::channel(false);
            Stop(Arc::new(tx), rx)
        }
        pub fn stop(&self) {
            let _ = self.0.send(true);
        }
        pub async fn wait(&self) {
            let mut rx = self.1.clone();
            let _ = rx.wait_for(|v| *v).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_concurrent_producers_committing_out_of_id_order_lose_nothing_and_keep_entity_order()
{
    if !postgres_available() {
        return;
    }
    let _shared = postgres_lock(false).await;
    let pool = pool("riverbed-test").await;
    let table = unique("outbox_concurrent");
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let stop = stop_flag::Stop::new();
    let mut relays = Vec::new();
    for r in 0..2 {
        let source = OutboxSource::open(config(&table, &format!("relay-{r}")))
            .await
            .unwrap();
        relays.push(tokio::spawn(relay_loop(source, seen.clone(), stop.clone())));
    }
    let outbox = Outbox::new(&table).unwrap();
    let mut producers = Vec::new();
    for p in 0..6u64 {
        let outbox = outbox.clone();
        producers.push(tokio::spawn(async move {
            // A connection of its own per producer, as separate processes would have.
            let pool = support::pool("riverbed-producer").await;
            for i in 0..40u64 {
                let mut tx = pool.begin().await.unwrap();
                let entity = format!("e{}", (p * 7 + i) % 10);
                outbox
                    .enqueue(&mut tx, &entity, &json!({"p": p, "i": i}))
                    .await
                    .unwrap();
                // Hold the transaction a varying while: ids are taken in one order and
                // committed in another.
                let hold = (p * 13 + i * 7) % 17;
                tokio::time::sleep(Duration::from_millis(hold)).await;
                tx.commit().await.unwrap();
            }
        }));
    }
    for p in producers {
        p.await.unwrap();
    }
    wait_unsent(&pool, &table, 0).await;
    stop.stop();
    for r in relays {
        r.await.unwrap().close().await.unwrap();
    }
    let seen = seen.lock().unwrap().clone();
    let ids: HashSet<u64> = seen.iter().map(|s| s.2).collect();
    assert_eq!(ids.len(), 240, "every row relayed");
    assert_eq!(seen.len(), 240, "none twice without a crash");
    let mut last = BTreeMap::<String, i64>::new();
    for (entity, v, _) in &seen {
        let prev = last.insert(entity.clone(), *v).unwrap_or(0);
        assert_eq!(*v, prev + 1, "{entity}: version {v} after {prev}");
    }
    drop_outbox(&pool, &table).await;
}
