//! Where messages come from: the `Source` trait, deliveries and how they are settled.

use std::sync::Arc;

use async_trait::async_trait;

use crate::dead_letter::{DeadLetterRoute, DeadLetterSink};
use crate::message::Message;
use crate::outcome::Settlement;

/// An opaque value a source gives each delivery so its acker can settle it later
/// (a delivery tag with its channel generation, a log offset...).
pub type AckToken = u64;

/// A message handed over by a source, with the token that settles it.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The message.
    pub message: Message,
    /// Settles this delivery through the source's [`Acker`].
    pub token: AckToken,
}

/// One settled delivery.
#[derive(Debug, Clone)]
pub struct Settled {
    /// The delivery's token.
    pub token: AckToken,
    /// What to do with it.
    pub settlement: Settlement,
    /// The message as it was delivered; present for [`Settlement::Retry`] so the source can
    /// republish it.
    pub message: Option<Message>,
}

/// Settles deliveries with the broker (or log). Called from any task; must not block.
///
/// Settlements arrive in completion order, not delivery order: an acker that acknowledges
/// cumulatively (AMQP `multiple`, a log's consumer position) tracks the contiguous prefix,
/// for instance with [`crate::ContiguousTracker`].
pub trait Acker: Send + Sync + 'static {
    /// Settles a group of deliveries.
    fn settle(&self, settled: Vec<Settled>);
}

/// What a source can do beyond plain acknowledgement.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// It can hold a message back and redeliver it later (a TTL retry queue), so a transient
    /// failure does not hold a prefetch slot.
    pub delayed_retry: bool,
    /// How many deliveries the source hands out before some are settled (a prefetch count),
    /// if it limits them. Default batch sizes are derived from the smaller of this and
    /// `max_in_flight`, so an untuned batch never waits for more than the source can give.
    pub window: Option<usize>,
}

/// The error a source returns when it cannot go on (bad configuration, refused credentials).
/// Connection loss is not such an error: sources reconnect by themselves.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The source is misconfigured or refused by the broker for good.
    #[error("source misconfigured: {0}")]
    Config(String),
    /// Any other fatal error.
    #[error("source failed: {0}")]
    Fatal(String),
}

/// A stream of deliveries with acknowledgement.
#[async_trait]
pub trait Source: Send + 'static {
    /// A short description for logs ("embedded log riverbed.db topic readings").
    fn describe(&self) -> String;

    /// Waits for at least one delivery and appends up to `max` to `out`.
    ///
    /// Returns `Ok(false)` when the source is exhausted and will never deliver again (a finite
    /// generator, a replay that reached its end); otherwise `Ok(true)`. Must be cancel-safe:
    /// the pipeline drops this future when it stops intake.
    async fn recv(&mut self, out: &mut Vec<Delivery>, max: usize) -> Result<bool, SourceError>;

    /// The acker settling this source's deliveries.
    fn acker(&self) -> Arc<dyn Acker>;

    /// What this source can do beyond acknowledgement.
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }

    /// The dead-letter destination that goes with this source, used when the pipeline names none.
    fn dead_letters(&self) -> Option<Arc<dyn DeadLetterSink>> {
        None
    }

    /// Called once before the first `recv` with the pipeline's dead-letter path: a source that
    /// makes dead letters itself (a broker retry it gives up) stores them through it, so they
    /// reach the configured destination and are logged and counted like every other.
    fn route_dead_letters(&mut self, route: DeadLetterRoute) {
        let _ = route;
    }

    /// Called once after the pipeline has drained: flush pending acks and close.
    async fn close(&mut self) -> Result<(), SourceError> {
        Ok(())
    }
}
