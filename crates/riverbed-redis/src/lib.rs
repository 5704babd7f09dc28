//! Riverbed's Redis sinks: counters that never count a redelivered message twice, the latest
//! state per entity by version, and per-group totals written at wall-clock-aligned boundaries,
//! derived from committed data so that crashes and Redis restarts cannot skew them.
//!
//! # Layout
//! - `config`: TOML configuration ([`RedisConfig`], [`HashIncrConfig`], [`LatestConfig`]).
//! - `hash_incr`: [`HashIncrSink`], `HINCRBY`/`HINCRBYFLOAT` with a per-message-id dedup guard.
//! - `incr_script`: its Lua script (grouped increments, `SET NX` markers, exact refusals).
//! - `latest`: [`LatestSink`], versioned state per key with tombstones.
//! - `totals`: [`Totals`], the groups of a [`riverbed_core::TotalsSource`] (PostgreSQL, joined
//!   in the daemon: this crate depends on no other connector) written with `HSET` in one
//!   script that never lets an older snapshot replace a newer one; [`reconcile`] at startup.
//! - `window`: [`WindowCounter`], totals flushed at every aligned boundary, lateness measured.
//! - `field`: message fields and key templates.
//! - `batch`: script calls over a batch, refused messages isolated by splitting.
//! - `lease`: [`RedisLease`], a singleton lease (`SET NX PX`, renewed) with a fencing token.
//! - `claims`: [`RedisClaims`], the claim store that lets one of several redundant instances
//!   write each message.
//! - `error`: errors and their transient/permanent classification.
//!
//! # Delivery
//! Every sink reports per-message outcomes: connection loss, timeouts, `LOADING` and `BUSY`
//! are transient (the pipeline retries), `WRONGTYPE` and non-numeric values are permanent
//! for the message concerned (dead-lettered; the rest of its batch is written).

#![forbid(unsafe_code)]

mod batch;
mod claims;
mod config;
mod error;
mod field;
mod hash_incr;
mod incr_script;
mod latest;
mod lease;
mod totals;
mod window;

pub use claims::RedisClaims;
pub use config::{Amount, DedupConfig, DeleteConfig, HashIncrConfig, LatestConfig, RedisConfig};
pub use error::{Error, ErrorClass, Result, classify};
pub use field::{Field, KeyTemplate};
pub use hash_incr::{HashIncrSink, default_marker_prefix};
pub use latest::LatestSink;
pub use lease::RedisLease;
pub use riverbed_core::{GroupTotals, TotalsSnapshot as Snapshot};
pub use totals::{Totals, TotalsLayout, epoch_ms, reconcile};
pub use window::{DEFAULT_EVERY, Flush, WindowCounter, next_boundary};
