//! Every 2 seconds while a pipeline generation runs: the broker's word on what waits at the
//! source (`riverbed_source_backlog_messages`, by queue or consumer, and `backlog` in
//! `/api/status`), and whether the source is connected (`riverbed_source_connected`).

use std::time::Duration;

use riverbed_core::Backlog;

use super::AdminState;

const EVERY: Duration = Duration::from_secs(2);

/// Samples until a newer generation runs or the process drains.
pub(super) fn watch(state: AdminState, generation: u64) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(EVERY);
        loop {
            tick.tick().await;
            let Some(live) = state.live_of(generation) else {
                return;
            };
            let connected = live
                .probes
                .connections
                .iter()
                .filter(|(what, _)| what == "source")
                .all(|(_, check)| check().is_ok());
            metrics::gauge!("riverbed_source_connected").set(f64::from(u8::from(connected)));
            let mut all: Vec<Backlog> = Vec::new();
            for probe in &live.probes.backlog {
                match probe.backlog().await {
                    Ok(b) => all.extend(b),
                    Err(e) => tracing::debug!(error = %e, "Source backlog not known"),
                }
            }
            for b in &all {
                metrics::gauge!("riverbed_source_backlog_messages", "queue" => b.name.clone())
                    .set(b.messages as f64);
            }
            state.set_backlog(all);
        }
    });
}
