//! Pipeline files: loading with line-precise errors, checking, and building the pipeline.

mod admin;
mod build;
mod check;
mod cluster;
mod counters;
mod feed;
mod load;
mod nats_partitions;
mod outbox;
pub mod pipeline_metrics;
pub mod probes;
mod processors;
pub mod raw;
mod redacted;
mod resume;
mod secrets;
mod steps;
mod table;
pub mod tasks;

use std::path::Path;

pub use admin::AdminPlan;
pub use build::{Built, build};
pub use check::{Plan, SinkPlanKind};
pub use cluster::{ClusterPlan, LeasePlan, SingletonPlan, amqp_source, nats_partition};
pub use feed::{FeedPlan, Messages};
pub use load::ConfigError;
pub use redacted::redacted;

/// Reads, parses and checks the pipeline file at `path`.
pub fn load(path: &Path) -> anyhow::Result<Plan> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    load_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Parses and checks a pipeline file's text, with `${VAR}` taken from the environment.
pub fn load_str(text: &str) -> Result<Plan, ConfigError> {
    load_with_env(text, &|name| std::env::var(name).ok())
}

/// Parses and checks a pipeline file's text, with `${VAR}` taken from `env`. No error quotes
/// a value that came from `env` or from a `*_file`.
pub fn load_with_env(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Plan, ConfigError> {
    let mut secrets = secrets::Secrets::default();
    load::parse(text, &mut secrets, env)
        .and_then(|raw| check::check(text, raw))
        .map_err(|e| secrets.scrub(e))
}

#[cfg(test)]
mod connector_tests;
#[cfg(test)]
mod secrets_tests;
#[cfg(test)]
mod tests;
