//! Where a generation's settlements go: the channel that delivered its messages.
//!
//! A trait rather than `lapin::Channel` itself, so the acker's bookkeeping can be tested
//! without a broker.

use async_trait::async_trait;
use lapin::Channel;
use lapin::options::{BasicAckOptions, BasicNackOptions};

/// Sends settlement frames on one channel.
#[async_trait]
pub(crate) trait AckChannel: Send + Sync + 'static {
    /// Acknowledges every delivery up to `tag` (`basic.ack` with `multiple`).
    async fn ack_up_to(&self, tag: u64) -> lapin::Result<()>;

    /// Acknowledges the delivery `tag` alone (`basic.ack` without `multiple`).
    async fn ack_one(&self, tag: u64) -> lapin::Result<()>;

    /// Rejects the delivery `tag` alone (`basic.nack` without `multiple`).
    async fn nack(&self, tag: u64, requeue: bool) -> lapin::Result<()>;
}

#[async_trait]
impl AckChannel for Channel {
    async fn ack_up_to(&self, tag: u64) -> lapin::Result<()> {
        self.basic_ack(tag, BasicAckOptions { multiple: true })
            .await
    }

    async fn ack_one(&self, tag: u64) -> lapin::Result<()> {
        self.basic_ack(tag, BasicAckOptions { multiple: false })
            .await
    }

    async fn nack(&self, tag: u64, requeue: bool) -> lapin::Result<()> {
        let options = BasicNackOptions {
            multiple: false,
            requeue,
        };
        self.basic_nack(tag, options).await
    }
}
