//! Singleton mode: stand by until this instance holds the lease, then consume; exit at once
//! when the lease can no longer be trusted, so that no two instances ever consume together.

use anyhow::Result;
use riverbed_redis::RedisLease;
use riverbed_sql::PgLease;

use crate::config::{LeasePlan, SingletonPlan};

/// A held or wanted singleton lease.
pub enum Lease {
    /// A PostgreSQL advisory lock.
    Postgres(PgLease),
    /// A Redis key.
    Redis(RedisLease),
}

impl Lease {
    async fn open(plan: &SingletonPlan) -> Result<Self> {
        Ok(match &plan.lease {
            LeasePlan::Postgres(p) => {
                Lease::Postgres(PgLease::new(p, &plan.name, plan.check_every)?)
            }
            LeasePlan::Redis(r) => {
                Lease::Redis(RedisLease::connect(r, &plan.name, plan.check_every).await?)
            }
        })
    }

    async fn try_acquire(&mut self) -> Result<bool> {
        Ok(match self {
            Lease::Postgres(l) => l.try_acquire().await?,
            Lease::Redis(l) => l.try_acquire().await?,
        })
    }

    /// Waits until this instance holds the lease, trying every `check_every` (errors, such as
    /// the lease's database being down, are logged and tried again).
    async fn acquire(&mut self, name: &str, check_every: std::time::Duration) {
        let mut logged = false;
        loop {
            match self.try_acquire().await {
                Ok(true) => return,
                Ok(false) if !logged => {
                    tracing::info!(lease = %name, "Standing by: another instance holds the lease");
                    logged = true;
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(lease = %name, error = %format!("{e:#}"), "Cannot reach the lease; trying again");
                }
            }
            tokio::time::sleep(check_every).await;
        }
    }

    /// How long a new holder waits before it consumes. A Redis key only expires after its
    /// holder stopped renewing it, which the holder notices first: no wait.
    fn takeover_delay(&self) -> std::time::Duration {
        match self {
            Lease::Postgres(l) => l.takeover_delay(),
            Lease::Redis(_) => std::time::Duration::ZERO,
        }
    }

    /// The fencing token of this acquisition, when the lease has one.
    pub fn fencing_token(&self) -> Option<u64> {
        match self {
            Lease::Postgres(_) => None,
            Lease::Redis(l) => l.fencing_token(),
        }
    }

    async fn lost(&mut self) -> String {
        match self {
            Lease::Postgres(l) => l.lost().await,
            Lease::Redis(l) => l.lost().await,
        }
    }
}

/// Waits for the lease (logging the standby), then the takeover delay. `None` when a stop
/// signal came first: a standby stops without having consumed anything.
pub async fn lead(plan: &SingletonPlan, stop: impl Future<Output = ()>) -> Result<Option<Lease>> {
    metrics::gauge!("riverbed_leader", "lease" => plan.name.clone()).set(0.0);
    let standby_since = tokio::time::Instant::now();
    let mut stop = std::pin::pin!(stop);
    let mut lease = tokio::select! {
        lease = Lease::open(plan) => lease?,
        _ = &mut stop => return Ok(None),
    };
    tokio::select! {
        _ = lease.acquire(&plan.name, plan.check_every) => {}
        _ = &mut stop => {
            tracing::info!(lease = %plan.name, "Stopped while standing by");
            return Ok(None);
        }
    }
    let delay = lease.takeover_delay();
    tracing::info!(
        lease = %plan.name,
        standby_ms = standby_since.elapsed().as_millis() as u64,
        takeover_delay_ms = delay.as_millis() as u64,
        fencing_token = lease.fencing_token(),
        "Lease acquired; consuming after the takeover delay"
    );
    // A former leader that lost its lease notices within two checks and stops: it cannot be
    // consuming any more when this delay is over.
    tokio::time::sleep(delay).await;
    metrics::gauge!("riverbed_leader", "lease" => plan.name.clone()).set(1.0);
    if let Some(token) = lease.fencing_token() {
        metrics::gauge!("riverbed_leader_fencing_token", "lease" => plan.name.clone())
            .set(token as f64);
    }
    tracing::info!(lease = %plan.name, "Leader: consuming");
    Ok(Some(lease))
}

/// Holds the lease while the pipeline runs; when it is lost, logs why and ends the process at
/// once (exit code 3): nothing unsettled is acknowledged, the broker redelivers it to the next
/// leader, and a supervisor restarts this instance as a standby.
pub fn hold(mut lease: Lease, name: String) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let why = lease.lost().await;
        metrics::gauge!("riverbed_leader", "lease" => name.clone()).set(0.0);
        tracing::error!(lease = %name, reason = %why, "Lease lost; leaving at once so no other instance consumes alongside");
        eprintln!("riverbed: lease `{name}` lost ({why}); exiting");
        std::process::exit(3);
    })
}

/// How many instances share a partitioned pipeline now (this one included).
#[async_trait::async_trait]
pub trait Membership: Send + Sync {
    /// Counts the instances there now, this one included (an instance that stopped saying
    /// it is there drops out after a while).
    async fn live(&self) -> Result<usize>;
}

/// Mode `partitioned` on a source without exclusive consumers (NATS): a lease per partition,
/// named `<name>.<partition>`. Partitions are tried in an order of this instance's own, one
/// new partition per `check_every` at most, so instances that start together share them; a
/// partition whose lease is won is handed to `won` after the takeover delay, and held: when
/// its lease is lost the process leaves at once, like a singleton leader (exit code 3), so no
/// two instances ever consume one partition together.
///
/// With `members`, each instance holds at most its fair share (the partitions over the live
/// instances, rounded up): it wins no more than that, and one holding more (an instance
/// started later is there now) asks the run loop to give one back, which drains the
/// pipeline before the lease goes, so the next holder starts where this one stopped. Runs
/// until `stop`.
pub async fn partition_leases(
    plan: SingletonPlan,
    partitions: u16,
    held: crate::held::HeldPartitions,
    members: Option<Box<dyn Membership>>,
    won: impl Fn(u16) + Send + 'static,
    stop: impl Future<Output = ()> + Send,
) {
    let mut stop = std::pin::pin!(stop);
    // Partitions this process already holds (a pipeline built again after a drain): consumed
    // again at once, their leases held on.
    let mut order: Vec<u16> = (0..partitions).filter(|p| !held.holds(*p)).collect();
    for p in held.partitions() {
        tracing::info!(partition = p, "Partition lease held on; consuming again");
        won(p);
    }
    rand::seq::SliceRandom::shuffle(order.as_mut_slice(), &mut rand::rng());
    let mut wanted: Vec<(u16, Option<Lease>)> = order.into_iter().map(|p| (p, None)).collect();
    let mut handing_back = false;
    loop {
        let share = match &members {
            None => usize::from(partitions),
            Some(m) => match m.live().await {
                Ok(live) => usize::from(partitions).div_ceil(live.max(1)),
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "Cannot count the instances; keeping the partitions held");
                    usize::from(partitions)
                }
            },
        };
        let holding = held.partitions();
        if holding.len() > share && !handing_back {
            let p = *holding.last().expect("more than the share: some");
            if held.ask_release(p) {
                tracing::info!(
                    partition = p,
                    holding = holding.len(),
                    share,
                    "More than this instance's share: handing a partition back after a drain"
                );
                handing_back = true;
            }
        }
        for (p, slot) in wanted.iter_mut() {
            if held.partitions().len() >= share {
                break;
            }
            let name = format!("{}.{p}", plan.name);
            let lease = match slot {
                Some(lease) => lease,
                None => {
                    let one = SingletonPlan {
                        name: name.clone(),
                        ..plan.clone()
                    };
                    match Lease::open(&one).await {
                        Ok(lease) => slot.insert(lease),
                        Err(e) => {
                            tracing::warn!(lease = %name, error = %format!("{e:#}"), "Cannot reach the lease; trying again");
                            continue;
                        }
                    }
                }
            };
            match lease.try_acquire().await {
                Ok(true) => {
                    let lease = slot.take().expect("just used");
                    tracing::info!(lease = %name, partition = *p, "Partition lease acquired; consuming after the takeover delay");
                    tokio::select! {
                        _ = tokio::time::sleep(lease.takeover_delay()) => {}
                        _ = &mut stop => return,
                    }
                    metrics::gauge!("riverbed_leader", "lease" => name.clone()).set(1.0);
                    held.insert(*p, hold(lease, name));
                    won(*p);
                    *p = u16::MAX;
                    break;
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(lease = %name, error = %format!("{e:#}"), "Cannot reach the lease; trying again");
                }
            }
        }
        wanted.retain(|(p, _)| *p != u16::MAX);
        tokio::select! {
            _ = tokio::time::sleep(plan.check_every) => {}
            _ = &mut stop => return,
        }
    }
}
