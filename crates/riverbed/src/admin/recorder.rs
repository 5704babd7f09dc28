//! The process-wide Prometheus recorder: every metric of the workspace described (HELP, unit),
//! histograms exported as Prometheus histograms with buckets suited to each.

use std::time::Duration;

use anyhow::{Context, Result};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use riverbed_core::metrics_catalog::{self, MetricKind};

/// How often histogram samples are folded into the exported buckets.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Installs the recorder, describes every metric and sets `riverbed_build_info`.
pub fn install() -> Result<PrometheusHandle> {
    let mut builder = PrometheusBuilder::new();
    for m in metrics_catalog::METRICS {
        if m.kind == MetricKind::Histogram {
            builder = builder
                .set_buckets_for_metric(
                    Matcher::Full(m.name.to_owned()),
                    metrics_catalog::buckets(m),
                )
                .with_context(|| format!("histogram buckets of {}", m.name))?;
        }
    }
    let handle = builder
        .install_recorder()
        .context("installing the metrics recorder")?;
    metrics_catalog::describe_metrics(env!("CARGO_PKG_VERSION"));
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(UPKEEP_EVERY);
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}
