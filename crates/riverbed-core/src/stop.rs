//! A stop request and the grace period that follows it, shared by the intake and the drain.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A pipeline's stop: requested once; the grace period counts from the request.
#[derive(Clone)]
pub(crate) struct Stop {
    token: CancellationToken,
    requested_at: Arc<OnceLock<Instant>>,
    grace: Duration,
}

impl Stop {
    pub fn new(grace: Duration) -> Self {
        Stop {
            token: CancellationToken::new(),
            requested_at: Arc::new(OnceLock::new()),
            grace,
        }
    }

    /// Requests the stop (again: no effect).
    pub fn request(&self) {
        self.requested_at.get_or_init(Instant::now);
        self.token.cancel();
    }

    /// Completes once a stop was requested.
    pub async fn requested(&self) {
        self.token.cancelled().await;
    }

    /// Completes when the grace period after the stop request is over.
    pub async fn grace_over(&self) {
        self.requested().await;
        let at = *self.requested_at.get_or_init(Instant::now);
        tokio::time::sleep_until(at + self.grace).await;
    }

    /// The grace period.
    pub fn grace(&self) -> Duration {
        self.grace
    }
}
