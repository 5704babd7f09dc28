//! The process-wide recorder: Prometheus, with every metric of the workspace described (HELP,
//! unit) and histograms exported as Prometheus histograms with buckets suited to each, fanned
//! out with the dashboard's [`Capture`].

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_util::layers::FanoutBuilder;
use riverbed_core::metrics_catalog::{self, MetricKind};

use super::capture::Capture;

/// How often histogram samples are folded into the exported buckets.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Installs the recorder, describes every metric and sets `riverbed_build_info`; returns the
/// Prometheus handle and the capture the dashboard's sampler reads.
pub fn install() -> Result<(PrometheusHandle, Arc<Capture>)> {
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
    let prometheus = builder.build_recorder();
    let handle = prometheus.handle();
    let capture = Arc::new(Capture::default());
    let fanout = FanoutBuilder::default()
        .add_recorder(prometheus)
        .add_recorder(capture.clone())
        .build();
    metrics::set_global_recorder(fanout)
        .map_err(|e| anyhow::anyhow!("installing the metrics recorder: {e}"))?;
    metrics_catalog::describe_metrics(env!("CARGO_PKG_VERSION"));
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(UPKEEP_EVERY);
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok((handle, capture))
}
