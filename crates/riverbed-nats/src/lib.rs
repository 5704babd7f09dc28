//! Riverbed's NATS JetStream connector (on `async-nats`, for nats-server 2.9 and later): a
//! durable pull-consumer source with end-to-end acknowledgements, a publishing sink that
//! awaits every publish ack, and a dead-letter subject.
//!
//! - [`NatsSource`] creates or binds a durable pull consumer with explicit acks (never
//!   `all`, which would acknowledge earlier failed messages with a later one) and
//!   acknowledges each delivery only once the pipeline settled it. In-progress acks keep slow
//!   work from being redelivered; broker retries are delayed naks; `max_ack_pending` follows
//!   the pipeline's window. Missed heartbeats, failed pulls and server restarts renew the
//!   pull, so the consumer is never left silently stalled.
//! - [`NatsSink`] publishes with `Nats-Msg-Id` from the message id (the server's duplicate
//!   window drops a retried copy), headers kept, the subject from a template.
//! - [`NatsDeadLetters`] publishes dead letters with their reason as headers.
//!
//! Only what nats-server 2.9 supports is used: one filter subject per consumer (several need
//! 2.10; a comma-separated list is refused with that reason), no consumer `action`.
//!
//! What nats-server 2.9 does that the sinks must absorb (Riverbed's sinks do, by key or
//! message id): a nak of the last delivered message may make the server deliver it twice
//! (once as a first delivery, once as a redelivery); deliveries given back when a source
//! closes may go to its last waiting pull request and come back only after `ack_wait`.
//! A durable the server loses while the source runs is created again from the lowest
//! unsettled stream sequence, so its history is not replayed.
//!
//! # Example
//! ```toml
//! servers = ["nats://riverbed:secret@nats-1:4222", "nats://riverbed:secret@nats-2:4222"]
//! stream = "ORDERS"
//! durable = "riverbed-orders"
//! filter_subject = "orders.>"
//! deliver = "all"          # or "new", 1234 (a stream sequence), "2024-05-01T00:00:00Z"
//! ack_wait = "30s"
//! ```
//!
//! # Layout
//! - [`config`]: the raw configuration users write; `settings`: the checked form.
//! - [`server`]: server URLs that hide their credentials; `connect`: the client and streams.
//! - [`source`]: the consumer and its renewals; `delivery`: delivery → message; `acker`:
//!   acks, in-progress acks and naks.
//! - `publisher`: publish and await acks; [`sink`] and [`dead_letter`] publish through it.
//! - `headers` and `subject`: headers and subject templates; [`status`]; [`error`].

#![forbid(unsafe_code)]

mod acker;
pub mod backlog;
pub mod config;
mod connect;
pub mod dead_letter;
mod delivery;
pub mod error;
mod headers;
pub mod members;
mod publisher;
pub mod server;
mod settings;
pub mod sink;
pub mod source;
pub mod status;
mod subject;

pub use backlog::NatsBacklog;
pub use config::{DeliverConfig, NatsDeadLetterConfig, NatsSinkConfig, NatsSourceConfig};
pub use dead_letter::NatsDeadLetters;
pub use delivery::CONSUMER_SEQUENCE_HEADER;
pub use error::{Error, Result};
pub use headers::MSG_ID;
pub use members::Members;
pub use server::ServerUrl;
pub use sink::NatsSink;
pub use source::NatsSource;
pub use status::SourceStatus;
