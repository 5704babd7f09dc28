//! Pipeline files: loading with line-precise errors, checking, and building the pipeline.

mod build;
mod check;
mod cluster;
mod counters;
mod load;
pub mod raw;
mod resume;
mod table;

use std::path::Path;

pub use build::{Built, build};
pub use check::{Plan, SinkPlanKind};
pub use cluster::{ClusterPlan, SingletonPlan, amqp_source};
pub use load::ConfigError;

/// Reads, parses and checks the pipeline file at `path`.
pub fn load(path: &Path) -> anyhow::Result<Plan> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    load_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Parses and checks a pipeline file's text.
pub fn load_str(text: &str) -> Result<Plan, ConfigError> {
    let raw = load::parse(text)?;
    check::check(text, raw)
}

#[cfg(test)]
mod tests;
