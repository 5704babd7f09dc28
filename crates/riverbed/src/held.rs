//! The partition leases this process holds (mode `partitioned` on NATS), kept across the
//! pipelines a reconfiguration builds, and given back one at a time when this instance holds
//! more than its share: the run loop drains the pipeline (everything in flight written and
//! acknowledged), then the lease is released and the pipeline built again without it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

#[derive(Default)]
struct Inner {
    /// Each held partition's holding task (it owns the lease).
    holds: BTreeMap<u16, JoinHandle<()>>,
    /// Where hand-back requests go: the run loop, once it listens.
    release: Option<mpsc::UnboundedSender<u16>>,
}

/// Shared, cheap to clone; every plan of one process gets the same.
#[derive(Clone, Default)]
pub struct HeldPartitions(Arc<Mutex<Inner>>);

impl std::fmt::Debug for HeldPartitions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("HeldPartitions")
            .field(&self.partitions())
            .finish()
    }
}

impl HeldPartitions {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().expect("held partitions lock")
    }

    /// The partitions held, in order.
    pub fn partitions(&self) -> Vec<u16> {
        self.lock().holds.keys().copied().collect()
    }

    /// Whether `p` is held.
    pub fn holds(&self, p: u16) -> bool {
        self.lock().holds.contains_key(&p)
    }

    /// Records that `p` is held by the task `hold`.
    pub fn insert(&self, p: u16, hold: JoinHandle<()>) {
        self.lock().holds.insert(p, hold);
    }

    /// The run loop's end: hand-back requests arrive here from now on.
    pub fn releases(&self) -> mpsc::UnboundedReceiver<u16> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().release = Some(tx);
        rx
    }

    /// Asks the run loop to drain and give `p` back; false when nothing listens.
    pub fn ask_release(&self, p: u16) -> bool {
        self.lock()
            .release
            .as_ref()
            .is_some_and(|tx| tx.send(p).is_ok())
    }

    /// Gives `p`'s lease back: its holding task ends, dropping the lease (a PostgreSQL lock
    /// goes with its session at once; a Redis key expires after its time to live).
    pub fn release(&self, p: u16) {
        if let Some(hold) = self.lock().holds.remove(&p) {
            hold.abort();
        }
    }
}
