//! Riverbed's RabbitMQ connector (AMQP 0.9.1, on `lapin`): a source for queues and streams, a
//! publishing sink, and a dead-letter queue.
//!
//! - [`AmqpSource`] consumes with manual acknowledgements, coalesced into cumulative
//!   `basic.ack` frames; it reconnects forever with jittered backoff, rotating through its URLs,
//!   and declares its topology again each time. It can consume streams from an offset and
//!   resume after the offset stored with the sink's data ([`AmqpSource::resume_after`]).
//!   [`AmqpSource::declare`] declares its topology ahead of its first run, so messages
//!   published before it ever consumed wait in its queue.
//! - Broker retry: with `RetryMode::Broker`, a transiently failed message is republished to a
//!   TTL queue that dead-letters it back after the delay, carrying its attempt in the
//!   `x-riverbed-attempt` header. **Later messages of the same key overtake it while it
//!   waits**: use broker retry only for pipelines that do not need per-key order. In-process
//!   retry, the core default, keeps the order. A retry the broker does not take (its retry
//!   queue refused, the copy not confirmed) is held and tried again with backoff, its delivery
//!   keeping its prefetch slot; it is requeued only when the source closes.
//! - Deliveries are counted across crashes and reconnects (`x-delivery-count` on quorum
//!   queues, the `redelivered` flag elsewhere) into `Metadata::deliveries`, which the runtime
//!   limits with `max_deliveries`. A quorum queue the source creates also gets
//!   `x-delivery-limit` a bit above it ([`AmqpSource::max_deliveries`]) and dead-letters past
//!   it, at least once, to the dead-letter queue: the broker never drops a message silently.
//!   A queue that exists without them is consumed as it is (the broker refuses a declaration
//!   with other arguments); add them with a policy (`delivery-limit`, `dead-letter-*`).
//! - [`AmqpSink`] publishes with confirms, persistent messages and `mandatory`: an unroutable
//!   message is a permanent failure (it goes to the dead-letter queue), never a silent drop.
//! - [`AmqpDeadLetters`] stores dead letters in a durable queue, with their reason as headers;
//!   [`dlq`] browses such a queue without consuming it, removes letters, and redrives copies
//!   with confirms (what `riverbed dlq` runs).
//!
//! Configuration comes from [`AmqpSourceConfig`], [`AmqpSinkConfig`] and
//! [`AmqpDeadLetterConfig`] (serde, unknown fields refused); constructors check it once and
//! report the faulty field. Credentials in URLs never reach logs or `Debug` output.
//!
//! # Example
//! ```toml
//! urls = ["amqp://riverbed:secret@rabbit-1:5672/%2f", "amqp://riverbed:secret@rabbit-2:5672/%2f"]
//! queue = "orders"
//! queue_type = "quorum"
//! exchanges = [{ name = "orders", kind = "topic" }]
//! bindings = [{ exchange = "orders", routing_key = "order.#" }]
//! # dead letters go to `orders.dlq`, broker retries through `orders.retry.<tier>ms`
//! ```
//! A stream read from its beginning, resumable after an offset stored with the sink's data:
//! ```toml
//! queue = "readings"
//! queue_type = "stream"
//! stream_offset = "first"   # or "last", "next", 1234, "2024-05-01T00:00:00Z"
//! ```
//!
//! # Layout
//! - [`config`]: the raw configuration users write; `settings`: the checked form.
//! - [`url`]: broker URLs that hide their credentials.
//! - `connect`: connecting with URL rotation; `topology`: declaring exchanges, queues, bindings.
//! - [`source`]: the consumer and its reconnect loop; `delivery`: delivery → message.
//! - `acker` and `window`: coalesced acknowledgements per channel generation.
//! - `retry`: the broker-retry worker; `publisher`: confirms, returns and channel pooling.
//! - [`sink`] and [`dead_letter`]: publishing destinations; [`dlq`]: browsing and redriving
//!   a dead-letter queue.
//! - `headers`: AMQP field tables ↔ Riverbed headers; `death`: the `x-death` history;
//!   `routing`: routing-key templates.
//! - [`status`]: live counters of a source; [`error`]: the error type.

#![forbid(unsafe_code)]

mod acker;
pub mod backlog;
pub mod config;
mod connect;
pub mod control;
pub mod dead_letter;
mod death;
mod delivery;
pub mod dlq;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
mod headers;
mod publisher;
mod retry;
mod routing;
mod settings;
pub mod sink;
pub mod source;
pub mod status;
mod topology;
pub mod url;
mod window;

pub use backlog::AmqpBacklog;
pub use config::{
    AmqpDeadLetterConfig, AmqpSinkConfig, AmqpSourceConfig, ArgValue, BindingConfig,
    ExchangeConfig, ExchangeType, QueueType, RetryQueueConfig, StreamOffsetConfig,
};
pub use control::{AmqpControlConfig, ControlQueue};
pub use dead_letter::AmqpDeadLetters;
pub use dlq::{Browser, DeadLetterQueue, QueuedLetter, RedriveTarget, Redriver};
pub use error::{Error, Result};
pub use headers::ATTEMPT_HEADER;
pub use sink::AmqpSink;
pub use source::AmqpSource;
pub use status::SourceStatus;
pub use url::BrokerUrl;
