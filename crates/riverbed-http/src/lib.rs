//! Riverbed's HTTP sink (on `reqwest` with rustls and the system's roots): messages become
//! requests, one per message or one per batch (JSON array or NDJSON), with a timeout, retries
//! that honour `Retry-After`, an `Idempotency-Key` from the message id, and a circuit breaker
//! per endpoint that makes the pipeline wait instead of dead-lettering while the service is
//! down.
//!
//! # Example
//! ```toml
//! url = "https://api.example.com/orders/{key}"
//! method = "PUT"
//! headers = { Authorization = "Bearer ${ORDERS_API_TOKEN}" }
//! header_fields = { "X-Tenant" = "/tenant" }
//! timeout = "5s"
//! breaker = { failure_ratio = 0.5, window = 20, minimum_calls = 10, open_for = "10s" }
//! ```
//!
//! # Layout
//! - [`config`]: the raw configuration users write; `settings`: the checked form.
//! - `field`: per-message values (JSON pointer, `$key`, `$header.NAME`...).
//! - `request`: messages into requests and bodies; `classify`: what each answer means.
//! - `send`: one request through the breaker, with its retries; [`sink`]: order and batches.
//! - [`error`]. The breaker itself is `riverbed_core::breaker`.

#![forbid(unsafe_code)]

mod classify;
pub mod config;
pub mod error;
mod field;
mod request;
mod send;
mod settings;
pub mod sink;

pub use config::{BodyFormat, BreakerConfig, HttpSinkConfig, SecretHeaders};
pub use error::{Error, Result};
pub use request::IDEMPOTENCY_KEY;
pub use sink::HttpSink;
