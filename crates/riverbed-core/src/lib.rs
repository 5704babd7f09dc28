//! Riverbed's pipeline runtime: moves messages from a source through ordered partitions and
//! batching sinks, and settles each delivery only after every sink it went to committed it.
//!
//! # Layout
//! - [`message`]: the message, its headers and delivery metadata.
//! - [`outcome`]: per-message outcomes, settlements and dead letters.
//! - [`source`] / [`sink`] / [`dead_letter`]: the traits connectors implement.
//! - [`processor`] and [`processors`]: steps that run in a partition, in delivery order.
//! - [`key`]: partition keys and their stable hash.
//! - [`redact`]: credentials out of URLs (and of text quoting them) before anything prints them.
//! - [`retry`]: the retry policy and backoff.
//! - [`breaker`]: circuit breakers for sinks (policy, sliding window, half-open probes).
//! - [`contiguous`]: cumulative-ack tracking for sources.
//! - [`claims`]: redundant instances writing each message once, through a shared claim store.
//! - `builder`, `pipeline`, `intake`, `partition`, `lane`, `write`, `tracker`, `stop`: the
//!   runtime itself; `availability`: the one rule for unreachable destinations (partitions
//!   wait, the intake pauses, no attempt is used up).
//! - [`secret_url`]: connection URLs whose passwords never reach logs.
//! - [`totals`]: per-group totals as values and the [`TotalsSource`] trait (a database that
//!   keeps totals hands them to a destination that publishes them).
//! - [`tls`]: the TLS options (CA file, client certificate) every connector shares.
//! - [`stats`]: live counters, mirrored into `metrics`.
//! - [`metrics_catalog`]: every metric's help, unit and histogram buckets.
//! - [`template`]: per-message routing keys and subjects (`orders.{key}`).
//! - [`storm`]: the dead-letter storm guard (stop consuming when most messages fail).
//! - `testing` (feature `testing`): in-memory source and sinks that journal what happened.
//!
//! # Guarantees
//! A delivery is acknowledged only after every sink it was routed to has committed it, or after
//! its dead letter was stored. Messages with the same key are processed and written in
//! delivery order, across retries. The number of unsettled deliveries never exceeds
//! `max_in_flight`, so a slow sink slows the intake instead of growing memory.

#![forbid(unsafe_code)]

mod availability;
pub mod backlog;
pub mod breaker;
mod builder;
pub mod claims;
pub mod contiguous;
pub mod dead_letter;
mod intake;
pub mod key;
mod lane;
pub mod merge;
pub mod message;
pub mod metrics_catalog;
pub mod outcome;
mod partition;
mod pipeline;
pub mod processor;
pub mod processors;
pub mod redact;
pub mod retry;
pub mod secret_url;
pub mod sink;
pub mod source;
pub mod stats;
mod stop;
pub mod storm;
pub mod template;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tls;
pub mod totals;
mod tracker;
mod write;

pub use availability::SinkHealth;
pub use backlog::{Backlog, BacklogProbe};
pub use builder::{BuildError, DEFAULT_MAX_DELIVERIES, PipelineBuilder, default_partitions};
pub use claims::{Claim, ClaimId, ClaimStore, ClaimedSink};
pub use contiguous::ContiguousTracker;
pub use dead_letter::{DeadLetterRoute, DeadLetterSink};
pub use key::{KeySpec, partition_of};
pub use lane::BatchSettings;
pub use message::{HeaderValue, Headers, Message, Metadata, json_pointer};
pub use outcome::{DeadLetter, FIRST_FAILURE_HEADER, Failure, Outcome, Settlement};
pub use pipeline::{Pipeline, PipelineError, Report};
pub use processor::{Emitter, FnProcessor, MAIN, Processor, ProcessorFactory};
pub use retry::{Backoff, RetryMode, RetryPolicy};
pub use secret_url::DatabaseUrl;
pub use sink::{BatchOutcome, NoopSink, Sink};
pub use source::{AckToken, Acker, Capabilities, Delivery, Settled, Source, SourceError};
pub use stats::{Stats, StatsSnapshot, WriteTimes};
pub use storm::{StormGuard, StormTripped};
pub use template::Template;
pub use totals::{GroupTotals, TotalsError, TotalsSnapshot, TotalsSource};
