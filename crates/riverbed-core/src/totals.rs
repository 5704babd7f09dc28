//! Per-group totals as values, and the [`TotalsSource`] trait that hands them over: the seam
//! between a database that keeps totals (the SQL connector's totals table or query) and a
//! destination that publishes them (the Redis window counter), so neither connector depends
//! on the other. The daemon joins them.

use async_trait::async_trait;

/// One group's totals, in the text form the source printed them (exact decimals stay exact).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupTotals {
    /// The group, such as a provider name.
    pub group: String,
    /// `(total name, value)` pairs such as `("count", "12")`; NULL totals are left out.
    pub values: Vec<(String, String)>,
}

/// Every group's totals at one instant, and how many groups had no name (NULL) and were left
/// out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TotalsSnapshot {
    /// The groups, in the source's order.
    pub groups: Vec<GroupTotals>,
    /// Groups skipped because their name was NULL.
    pub null_groups: usize,
}

/// Why a [`TotalsSource`] could not answer. Displayed as the source's own error.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct TotalsError(pub Box<dyn std::error::Error + Send + Sync + 'static>);

impl TotalsError {
    /// Wraps any error.
    pub fn new(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        TotalsError(Box::new(e))
    }
}

/// Where committed totals come from. Each call returns a consistent snapshot of everything
/// committed when it ran (one statement, one transaction): writing it as absolute values is
/// what keeps the totals exact through crashes and redeliveries.
#[async_trait]
pub trait TotalsSource: Send + Sync + 'static {
    /// The current totals of every group.
    async fn fetch(&self) -> Result<TotalsSnapshot, TotalsError>;
}

#[async_trait]
impl<T: TotalsSource + ?Sized> TotalsSource for std::sync::Arc<T> {
    async fn fetch(&self) -> Result<TotalsSnapshot, TotalsError> {
        (**self).fetch().await
    }
}
