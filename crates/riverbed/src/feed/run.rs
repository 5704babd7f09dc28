//! The driver beside the pipeline: applies timeouts and reconnects, sends recovery requests,
//! stores safe alives, and makes every producer state change a log line, a metric and a row.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;

use super::Shared;
use super::producer::Action;
use super::recovery::RecoveryHook;
use super::store::Store;

/// How often timeouts are checked when nothing else wakes the driver.
const TICK: Duration = Duration::from_millis(250);

/// Drives one feed's tracking until stopped.
pub struct Driver {
    feed: String,
    shared: Arc<Shared>,
    store: Arc<Store>,
    hook: Arc<RecoveryHook>,
}

impl Driver {
    /// A driver over `shared`, storing into `store`, recovering through `hook`.
    pub fn new(feed: String, shared: Arc<Shared>, store: Store, hook: RecoveryHook) -> Self {
        Driver {
            feed,
            shared,
            store: Arc::new(store),
            hook: Arc::new(hook),
        }
    }

    /// Runs until `stop`; the safe alives not yet stored are stored on the way out.
    pub async fn run(self, producers: Vec<String>, stop: BoxFuture<'static, ()>) {
        for p in &producers {
            self.save_status(p, false, "start").await;
        }
        let mut unsaved = BTreeMap::new();
        let mut tick = tokio::time::interval(TICK);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = tick.tick() => {}
                _ = self.shared.wake.notified() => {}
            }
            self.step(&mut unsaved).await;
        }
        self.store_alives(&mut unsaved).await;
    }

    async fn step(&self, unsaved: &mut BTreeMap<String, u64>) {
        let actions = {
            let now = Instant::now();
            let mut t = self.shared.tracker.lock().expect("feed tracker lock");
            t.sessions((self.shared.sessions)(), now);
            t.tick(now);
            t.take_actions()
        };
        for a in actions {
            self.act(a).await;
        }
        self.store_alives(unsaved).await;
    }

    /// Stores the alives that became safe; once stored, recoveries start from them.
    async fn store_alives(&self, unsaved: &mut BTreeMap<String, u64>) {
        for (p, ts) in std::mem::take(&mut *self.shared.safe.lock().expect("feed safe lock")) {
            let e = unsaved.entry(p).or_insert(ts);
            *e = (*e).max(ts);
        }
        if unsaved.is_empty() {
            return;
        }
        match self.store.save_alives(unsaved).await {
            Ok(()) => {
                let mut t = self.shared.tracker.lock().expect("feed tracker lock");
                for (p, ts) in std::mem::take(unsaved) {
                    t.committed(&p, ts);
                }
            }
            Err(e) => {
                tracing::warn!(feed = %self.feed, error = %format!("{e:#}"), "Storing the last good alives failed; trying again");
            }
        }
    }

    async fn act(&self, action: Action) {
        match action {
            Action::Request {
                producer,
                after,
                request_id,
            } => self.request(producer, after, request_id),
            Action::Down { producer, reason } => {
                metrics::gauge!("riverbed_feed_producer_up", "producer" => producer.clone())
                    .set(0.0);
                metrics::counter!("riverbed_feed_producer_down_total", "producer" => producer.clone(), "reason" => reason.as_str())
                    .increment(1);
                tracing::warn!(feed = %self.feed, producer = %producer, reason = reason.as_str(), "Producer down");
                self.save_status(&producer, false, reason.as_str()).await;
            }
            Action::Up {
                producer,
                request_id,
                down_for,
            } => {
                metrics::gauge!("riverbed_feed_producer_up", "producer" => producer.clone())
                    .set(1.0);
                tracing::info!(
                    feed = %self.feed,
                    producer = %producer,
                    request_id,
                    down_ms = down_for.as_millis() as u64,
                    "Producer up"
                );
                self.save_status(&producer, true, "recovered").await;
            }
        }
    }

    /// Sends a recovery request in its own task; a failure marks the producer down again.
    fn request(&self, producer: String, after: Option<u64>, request_id: u64) {
        metrics::counter!("riverbed_feed_recovery_requests_total", "producer" => producer.clone())
            .increment(1);
        tracing::info!(
            feed = %self.feed,
            producer = %producer,
            after,
            request_id,
            url = %self.hook.describe(&producer),
            "Recovery requested"
        );
        let (hook, shared, feed) = (self.hook.clone(), self.shared.clone(), self.feed.clone());
        tokio::spawn(async move {
            if let Err(e) = hook.request(&producer, after, request_id).await {
                metrics::counter!("riverbed_feed_recovery_failures_total", "producer" => producer.clone())
                    .increment(1);
                tracing::error!(feed = %feed, producer = %producer, request_id, error = %format!("{e:#}"), "Recovery request failed");
                let mut t = shared.tracker.lock().expect("feed tracker lock");
                t.request_failed(&producer, request_id, Instant::now());
                drop(t);
                shared.wake.notify_one();
            }
        });
    }

    async fn save_status(&self, producer: &str, up: bool, reason: &str) {
        if let Err(e) = self.store.save_status(producer, up, reason).await {
            tracing::warn!(feed = %self.feed, producer = %producer, error = %format!("{e:#}"), "Storing the producer state failed");
        }
    }
}
