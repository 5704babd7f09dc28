//! Singleton mode: stand by until this instance holds the lease, then consume; exit at once
//! when the lease can no longer be trusted, so that no two instances ever consume together.

use anyhow::Result;
use riverbed_sql::PgLease;

use crate::config::SingletonPlan;

/// Waits for the lease (logging the standby), then the takeover delay. `None` when a stop
/// signal came first: a standby stops without having consumed anything.
pub async fn lead(plan: &SingletonPlan, stop: impl Future<Output = ()>) -> Result<Option<PgLease>> {
    let mut lease = PgLease::new(&plan.postgres, &plan.name, plan.check_every)?;
    metrics::gauge!("riverbed_leader", "lease" => plan.name.clone()).set(0.0);
    let standby_since = tokio::time::Instant::now();
    tokio::select! {
        _ = lease.acquire() => {}
        _ = stop => {
            tracing::info!(lease = %plan.name, "Stopped while standing by");
            return Ok(None);
        }
    }
    let delay = lease.takeover_delay();
    tracing::info!(
        lease = %plan.name,
        standby_ms = standby_since.elapsed().as_millis() as u64,
        takeover_delay_ms = delay.as_millis() as u64,
        "Lease acquired; consuming after the takeover delay"
    );
    // A former leader that lost its lease notices within two checks and stops: it cannot be
    // consuming any more when this delay is over.
    tokio::time::sleep(delay).await;
    metrics::gauge!("riverbed_leader", "lease" => plan.name.clone()).set(1.0);
    tracing::info!(lease = %plan.name, "Leader: consuming");
    Ok(Some(lease))
}

/// Holds the lease while the pipeline runs; when it is lost, logs why and ends the process at
/// once (exit code 3): nothing unsettled is acknowledged, the broker redelivers it to the next
/// leader, and a supervisor restarts this instance as a standby.
pub fn hold(mut lease: PgLease, name: String) {
    tokio::spawn(async move {
        let why = lease.lost().await;
        metrics::gauge!("riverbed_leader", "lease" => name.clone()).set(0.0);
        tracing::error!(lease = %name, reason = %why, "Lease lost; leaving at once so no other instance consumes alongside");
        eprintln!("riverbed: lease `{name}` lost ({why}); exiting");
        std::process::exit(3);
    });
}
