//! Settling outbox deliveries: when every row of a claim is settled, its acknowledged rows are
//! marked sent and the claim's transaction commits.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use riverbed_core::{Acker, Settled, Settlement};
use sqlx::{Postgres, Transaction};
use tokio::sync::{Notify, OwnedSemaphorePermit, mpsc};

use crate::outbox::claim::{Claim, ClaimSql, finish};

/// A claim whose rows are with the pipeline.
struct OpenClaim {
    tx: Transaction<'static, Postgres>,
    /// Row ids and entities, each entity's in version order.
    rows: Vec<(i64, String)>,
    pending: usize,
    acked: HashSet<i64>,
    /// Frees this instance's claim slot once the claim has committed.
    permit: OwnedSemaphorePermit,
}

/// A claim whose rows are all settled, on its way to commit.
struct Finished {
    tx: Transaction<'static, Postgres>,
    marked: Vec<i64>,
    rows: usize,
    permit: OwnedSemaphorePermit,
}

#[derive(Default)]
struct Claims {
    next: u64,
    open: HashMap<u64, OpenClaim>,
    by_row: HashMap<i64, u64>,
}

/// The outbox source's acker.
pub struct OutboxAcker {
    claims: Mutex<Claims>,
    finished: mpsc::UnboundedSender<Finished>,
}

impl OutboxAcker {
    /// The acker and its committer task; `wake` is notified after each commit (an entity's
    /// next rows are claimable, a claim slot is free).
    pub fn start(sql: ClaimSql, wake: Arc<Notify>) -> (Arc<Self>, tokio::task::JoinHandle<()>) {
        let (finished, rx) = mpsc::unbounded_channel();
        let acker = Arc::new(OutboxAcker {
            claims: Mutex::new(Claims::default()),
            finished,
        });
        (acker, tokio::spawn(commit_claims(rx, sql, wake)))
    }

    /// Registers a claim before its rows are handed out.
    pub fn open(&self, claim: Claim, permit: OwnedSemaphorePermit) {
        let mut c = self.claims.lock().expect("outbox acker lock");
        let n = c.next;
        c.next += 1;
        for r in &claim.rows {
            c.by_row.insert(r.id, n);
        }
        let rows: Vec<(i64, String)> = claim
            .rows
            .iter()
            .map(|r| (r.id, r.entity.clone()))
            .collect();
        let open = OpenClaim {
            tx: claim.tx,
            pending: rows.len(),
            rows,
            acked: HashSet::new(),
            permit,
        };
        c.open.insert(n, open);
    }
}

impl Acker for OutboxAcker {
    fn settle(&self, settled: Vec<Settled>) {
        let mut done = Vec::new();
        {
            let mut c = self.claims.lock().expect("outbox acker lock");
            for s in settled {
                let id = s.token as i64;
                let Some(n) = c.by_row.remove(&id) else {
                    continue;
                };
                let Some(open) = c.open.get_mut(&n) else {
                    continue;
                };
                open.pending -= 1;
                // A requeue (shutdown before it settled) or a retry leaves the row unsent: it
                // is claimed again, by this instance or another.
                if matches!(s.settlement, Settlement::Ack) {
                    open.acked.insert(id);
                }
                if open.pending == 0 {
                    done.extend(c.open.remove(&n));
                }
            }
        }
        for open in done {
            let marked = sent_prefix(&open.rows, &open.acked);
            let _ = self.finished.send(Finished {
                tx: open.tx,
                rows: open.rows.len(),
                marked,
                permit: open.permit,
            });
        }
    }
}

/// The rows to mark sent: per entity, the acknowledged rows up to its first unacknowledged
/// one. A later row marked while an earlier stayed unsent would be published again after it.
pub fn sent_prefix(rows: &[(i64, String)], acked: &HashSet<i64>) -> Vec<i64> {
    let mut blocked: HashSet<&str> = HashSet::new();
    let mut out = Vec::with_capacity(rows.len());
    for (id, entity) in rows {
        if blocked.contains(entity.as_str()) {
            continue;
        }
        if acked.contains(id) {
            out.push(*id);
        } else {
            blocked.insert(entity);
        }
    }
    out
}

async fn commit_claims(
    mut rx: mpsc::UnboundedReceiver<Finished>,
    sql: ClaimSql,
    wake: Arc<Notify>,
) {
    while let Some(f) = rx.recv().await {
        let marked = f.marked.len();
        match finish(f.tx, &sql, &f.marked).await {
            Ok(()) => {
                metrics::counter!("riverbed_outbox_marked_total").increment(marked as u64);
                tracing::debug!(rows = f.rows, marked, "Outbox claim committed");
            }
            Err(e) => {
                // The rows stay unsent and are published again: duplicates that consumers
                // drop by version or message id, never a loss.
                metrics::counter!("riverbed_outbox_mark_failures_total").increment(1);
                tracing::warn!(rows = f.rows, error = %e, "Marking outbox rows sent failed; they will be published again");
            }
        }
        drop(f.permit);
        wake.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unacknowledged_row_holds_back_the_later_rows_of_its_entity_only() {
        let rows: Vec<(i64, String)> = [(1, "a"), (2, "a"), (3, "a"), (4, "b"), (5, "b")]
            .into_iter()
            .map(|(i, e)| (i, e.to_owned()))
            .collect();
        let acked: HashSet<i64> = [1, 3, 4, 5].into_iter().collect();
        assert_eq!(sent_prefix(&rows, &acked), vec![1, 4, 5]);
    }
}
