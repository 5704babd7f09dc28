//! The scenarios: each moves messages one way and reports what it measured.

pub mod embedded;
pub mod runtime;

use std::path::PathBuf;

use anyhow::Result;
use futures_lite_free::BoxFuture;

use crate::measure::Sample;

/// Where a scenario runs.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// A data directory shared by the runs of one harness invocation.
    pub dir: PathBuf,
    /// Messages per run.
    pub count: u64,
    /// Which run this is (distinct consumers and output files per run).
    pub run: u32,
}

/// One scenario.
pub struct Scenario {
    /// Its name on the command line and in the table.
    pub name: &'static str,
    /// What it measures.
    pub what: &'static str,
    /// The scenario it is compared with (a ceiling or a baseline), if any.
    pub versus: Option<&'static str>,
    /// Prepares shared data once, in the parent.
    pub prepare: fn(&Ctx) -> BoxFuture<'static, Result<()>>,
    /// Runs once, in a child process.
    pub run: fn(Ctx) -> BoxFuture<'static, Result<Sample>>,
}

/// Every scenario, in table order.
pub fn all() -> Vec<Scenario> {
    let mut v = runtime::scenarios();
    v.extend(embedded::scenarios());
    v
}

/// Boxed futures without pulling in another crate.
pub mod futures_lite_free {
    /// A boxed, sendable future.
    pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;
}

/// Nothing to prepare.
pub fn no_prepare(_: &Ctx) -> BoxFuture<'static, Result<()>> {
    Box::pin(async { Ok(()) })
}
