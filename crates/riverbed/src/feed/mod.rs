//! `[feed]`: producer tracking for sports-style feeds on exclusive, server-named queues, where
//! whatever is published while a client is away is gone from the broker and must be replayed
//! through the provider's recovery API.
//!
//! # How it works
//! - [`source::FeedSource`] wraps the AMQP source: alives and `snapshot_complete` messages go
//!   to the [`producer::Tracker`] instead of the sinks; it notes which good alives have every
//!   earlier delivery settled.
//! - [`run`] drives the tracker: timeouts, reconnects, recovery requests
//!   ([`recovery::RecoveryHook`]), the state table ([`store::Store`]), logs and the
//!   `riverbed_feed_producer_up{producer}` gauge.
//!
//! # Rules
//! A producer is down at start, when no alive came for `alive_timeout`, when an alive says
//! `subscribed = 0`, and when the source reconnects (its queue, and what it held, is gone).
//! After the next good alive, the recovery hook is called with `after` = the last good alive
//! timestamp whose earlier messages were committed (stored in the state table, so a restart
//! recovers from it), at most once per `min_interval`; the producer is up when the
//! `snapshot_complete` carrying that request id arrives.

pub mod producer;
pub mod recovery;
pub mod run;
pub mod source;
pub mod store;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, Result};
use tokio::sync::Notify;

pub use crate::config::{FeedPlan, Messages};
pub use source::FeedSource;

/// What the source wrapper and the driver share.
pub struct Shared {
    /// The producers' state.
    pub tracker: Mutex<producer::Tracker>,
    /// Wakes the driver: something changed.
    pub wake: Notify,
    /// Good alives whose earlier deliveries are settled, not yet stored (latest per producer).
    pub safe: Mutex<BTreeMap<String, u64>>,
    /// Sessions the source opened so far (each new one is a reconnect).
    pub sessions: Sessions,
}

/// Counts the sessions a source opened.
pub type Sessions = Box<dyn Fn() -> u64 + Send + Sync>;

/// Request ids: random, below 2^53 (exact in any JSON reader), never 0.
fn request_id() -> u64 {
    (rand::random::<u64>() >> 11).max(1)
}

/// Tracking for `plan`, ready to wrap the source and run beside the pipeline: the state table
/// is created if needed and the stored alives are read.
pub async fn prepare(plan: &FeedPlan, sessions: Sessions) -> Result<(Arc<Shared>, run::Driver)> {
    let store = store::Store::open(plan)
        .await
        .with_context(|| format!("opening the feed state table {}", plan.table))?;
    let stored = store.load().await.context("reading the stored alives")?;
    for p in &plan.producers {
        tracing::info!(feed = %plan.name, producer = %p, after = ?stored.get(p), "Producer down until recovered");
        metrics::gauge!("riverbed_feed_producer_up", "producer" => p.clone()).set(0.0);
    }
    let timing = producer::Timing {
        alive_timeout: plan.alive_timeout,
        min_interval: plan.min_interval,
        recovery_timeout: plan.recovery_timeout,
    };
    let tracker = producer::Tracker::new(
        &plan.producers,
        &stored,
        timing,
        Box::new(request_id),
        Instant::now(),
    );
    let shared = Arc::new(Shared {
        tracker: Mutex::new(tracker),
        wake: Notify::new(),
        safe: Mutex::new(BTreeMap::new()),
        sessions,
    });
    let hook = recovery::RecoveryHook::new(plan)?;
    let driver = run::Driver::new(plan.name.clone(), shared.clone(), store, hook);
    Ok((shared, driver))
}
