//! Built-in processing steps: running aggregates and filters.

mod aggregate;
mod filter;

pub use aggregate::{AggregateState, RunningAggregate};
pub use filter::Filter;
