//! Mode `partitioned` on a NATS source: one durable consumer per partition, each consumed only
//! by the instance holding its lease, merged into the pipeline's one source.

use std::num::NonZeroU16;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use riverbed_core::Capabilities;
use riverbed_core::merge::MergedSource;

use super::build::Task;
use super::check::Plan;
use super::cluster::{SingletonPlan, nats_partition};
use crate::leader::Membership;

/// The merged source (empty until leases are won), the task that wins the leases and joins
/// each partition's consumer to it, and whether every joined consumer is pulling.
pub fn source(
    config: &riverbed_nats::NatsSourceConfig,
    plan: &Plan,
    partitions: NonZeroU16,
    lease: &SingletonPlan,
    probes: &mut super::probes::Probes,
) -> Result<(MergedSource, Task, PartitionStatus)> {
    let window = u32::try_from(plan.max_in_flight.get()).unwrap_or(u32::MAX);
    let configs: Vec<_> = (0..partitions.get())
        .map(|p| nats_partition(config, p))
        .collect();
    // Partition 0's source, never consumed: it asks for lag, holds the dead-letter destination
    // every partition shares and counts the instances.
    let first = riverbed_nats::NatsSource::new(configs[0].clone())?;
    // The lag of every partition's durable, held here or by another instance.
    probes.backlog(first.backlog_probe());
    for c in &configs[1..] {
        probes.backlog(riverbed_nats::NatsSource::new(c.clone())?.backlog_probe());
    }
    let dead_letters = first.dead_letter_destination();
    let capabilities = Capabilities {
        delayed_retry: true,
        window: Some(window as usize),
    };
    let describe = format!(
        "nats stream `{}`, {} partitions `{}` (those whose lease `{}.<p>` this instance holds)",
        config.stream, partitions, config.durable, lease.name
    );
    let (merged, joiner) = MergedSource::new(describe, capabilities, Some(dead_letters));
    let status = PartitionStatus::default();
    let joined = status.clone();
    let lease = lease.clone();
    let held = plan.held_partitions.clone();
    let counter = first;
    let bucket = members_bucket(&lease.name);
    // An instance beats every check from a task of its own; five checks without a beat (a
    // stalled or dead instance) and it no longer counts.
    let every = lease.check_every;
    let ttl = (every * 5).max(std::time::Duration::from_secs(1));
    let task: Task = Box::new(move |stop| {
        tokio::spawn(async move {
            let members: Option<Box<dyn Membership>> = match counter
                .members(&bucket, instance_id(), ttl)
                .await
            {
                Ok(m) => Some(Box::new(NatsMembers::beating(m, every))),
                Err(e) => {
                    tracing::warn!(bucket = %bucket, error = %e, "Cannot count the instances in their stream; the partitions are not rebalanced");
                    None
                }
            };
            crate::leader::partition_leases(
                lease,
                partitions.get(),
                held,
                members,
                move |p| {
                    let source = match riverbed_nats::NatsSource::new(configs[p as usize].clone()) {
                        Ok(s) => s.with_default_max_ack_pending(window).take_over(),
                        Err(e) => {
                            // Checked at load time: cannot happen.
                            tracing::error!(partition = p, error = %e, "Partition source refused");
                            return;
                        }
                    };
                    joined.add(p, source.status());
                    joiner.join(Box::new(source));
                },
                stop,
            )
            .await
        })
    });
    Ok((merged, task, status))
}

/// The joined partitions and their consumers' state, for `/ready`.
#[derive(Clone, Default)]
pub struct PartitionStatus(Arc<Mutex<Vec<Joined>>>);

/// A joined partition and its consumer's state.
type Joined = (u16, Arc<riverbed_nats::SourceStatus>);

impl PartitionStatus {
    fn add(&self, p: u16, status: Arc<riverbed_nats::SourceStatus>) {
        self.0.lock().expect("status lock").push((p, status));
    }

    /// Ready when every joined partition is pulling. An instance holding no partition stands
    /// by for one, which is ready as a standby is.
    pub fn connection(&self) -> Result<(), String> {
        let joined = self.0.lock().expect("status lock");
        for (p, s) in joined.iter() {
            s.connection().map_err(|e| format!("partition {p}: {e}"))?;
        }
        Ok(())
    }
}

/// The stream where the instances sharing lease `name` count themselves.
fn members_bucket(name: &str) -> String {
    format!("riverbed_members_{}", name_token(name))
}

/// This process among the instances: host, process id and start time.
fn instance_id() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        name_token(&format!("{}-{}-{nanos}", host.trim(), std::process::id()))
    })
}

/// `s` with every character but letters, digits, `-` and `_` made `_`: a valid stream name
/// and subject token.
fn name_token(s: &str) -> String {
    let keep = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    s.chars().map(|c| if keep(c) { c } else { '_' }).collect()
}

/// The instances counted in their stream; this one beats every check from a task that ends
/// with it (with the pipeline generation).
struct NatsMembers {
    members: Arc<riverbed_nats::Members>,
    beats: tokio::task::JoinHandle<()>,
}

impl NatsMembers {
    fn beating(members: riverbed_nats::Members, every: std::time::Duration) -> Self {
        let members = Arc::new(members);
        let beating = members.clone();
        let beats = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                if let Err(e) = beating.beat().await {
                    tracing::warn!(error = %e, "Cannot tell the other instances this one is there");
                }
            }
        });
        NatsMembers { members, beats }
    }
}

impl Drop for NatsMembers {
    fn drop(&mut self) {
        self.beats.abort();
    }
}

#[async_trait::async_trait]
impl Membership for NatsMembers {
    async fn live(&self) -> Result<usize> {
        Ok(self.members.count().await?)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn lease_names_become_stream_names() {
        assert_eq!(
            super::members_bucket("replication.v2 eu"),
            "riverbed_members_replication_v2_eu"
        );
        assert!(
            super::instance_id()
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c))
        );
    }
}
