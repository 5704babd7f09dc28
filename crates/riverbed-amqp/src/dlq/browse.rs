//! `Browser`: takes letters one by one with `basic.get` and keeps them unacknowledged, so that
//! closing gives back every letter not removed, in its place in the queue.

use std::collections::BTreeSet;
use std::time::Duration;

use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicNackOptions, QueueDeclareOptions, QueuePurgeOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};

use super::QueuedLetter;
use crate::connect::{Connector, close_within};
use crate::error::{Error, Result};
use crate::settings::{ConnectionSettings, short};

/// A browsing session on one dead-letter queue.
///
/// Letters taken stay unacknowledged (the broker holds them for this channel, invisible to
/// other consumers of the queue) until [`Browser::remove`] deletes one or [`Browser::close`]
/// gives them all back in order (a lost connection, or the process's end, gives them back
/// too, maybe in another order on a quorum queue). It takes at most
/// [`Browser::depth`] letters, the queue's length when it opened: letters that arrive later
/// are left for the next session, so a browse always ends and sees each letter once.
pub struct Browser {
    connection: Connection,
    channel: Channel,
    queue: String,
    depth: u32,
    taken: u32,
    /// Tags of the letters taken and not removed.
    held: BTreeSet<u64>,
    answer_timeout: Duration,
}

impl Browser {
    pub(crate) async fn open(c: &ConnectionSettings, queue: &str) -> Result<Self> {
        let mut connector = Connector::new(c);
        let (connection, _url) = connector.connect().await?;
        let opened = tokio::time::timeout(c.connect_timeout, async {
            let channel = connection.create_channel().await?;
            let options = QueueDeclareOptions {
                passive: true,
                ..Default::default()
            };
            let q = channel
                .queue_declare(short("queue", queue)?, options, FieldTable::default())
                .await
                .map_err(|source| Error::Topology {
                    action: format!("find dead-letter queue `{queue}`"),
                    source,
                })?;
            Ok::<_, Error>((channel, q.message_count()))
        })
        .await
        .unwrap_or(Err(Error::Timeout {
            action: "opening the dead-letter queue",
            after: c.connect_timeout,
        }));
        let (channel, depth) = match opened {
            Ok(x) => x,
            Err(e) => {
                close_within(c.connect_timeout, [], Some(&connection)).await;
                return Err(e);
            }
        };
        Ok(Browser {
            connection,
            channel,
            queue: queue.to_owned(),
            depth,
            taken: 0,
            held: BTreeSet::new(),
            answer_timeout: c.connect_timeout,
        })
    }

    /// How many letters the queue held when the session opened: the most it will take.
    pub fn depth(&self) -> u32 {
        self.depth
    }

    /// How many letters it took so far.
    pub fn taken(&self) -> u32 {
        self.taken
    }

    /// The next letter, or `None` once `depth` letters were taken or the queue has no more.
    pub async fn next(&mut self) -> Result<Option<QueuedLetter>> {
        if self.taken >= self.depth {
            return Ok(None);
        }
        let got = self.bounded("taking a letter", async {
            let q = short("queue", &self.queue)?;
            Ok(self
                .channel
                .basic_get(q, BasicGetOptions { no_ack: false })
                .await?)
        });
        let Some(m) = got.await? else {
            return Ok(None);
        };
        self.taken += 1;
        self.held.insert(m.delivery.delivery_tag);
        Ok(Some(QueuedLetter::from_delivery(m.delivery)))
    }

    /// Deletes a taken letter from the queue (`basic.ack`).
    pub async fn remove(&mut self, letter: &QueuedLetter) -> Result<()> {
        self.bounded("removing a letter", async {
            Ok(self
                .channel
                .basic_ack(letter.tag, BasicAckOptions { multiple: false })
                .await?)
        })
        .await?;
        self.held.remove(&letter.tag);
        Ok(())
    }

    /// Deletes every letter of the queue, taken or not (`queue.purge`); returns how many.
    /// Letters this session holds unacknowledged are not counted and stay: remove them.
    pub async fn purge(&self) -> Result<u32> {
        self.bounded("purging", async {
            let q = short("queue", &self.queue)?;
            Ok(self
                .channel
                .queue_purge(q, QueuePurgeOptions::default())
                .await?)
        })
        .await
    }

    /// Gives back every letter taken and not removed, in the order it was taken, and
    /// disconnects. The channel's close waits for the broker's answer, so every removal and
    /// return sent before it has taken effect when this returns.
    ///
    /// The letters are returned one by one in order (`basic.nack` with `requeue`) rather than
    /// by closing the channel: a quorum queue puts back what a closed channel held in no
    /// particular order, and what is returned one by one in the order returned (a classic
    /// queue puts each back in its place either way). Should this fail, the close (or the
    /// connection's end) gives back the rest.
    pub async fn close(self) -> Result<()> {
        let closed = self.bounded("closing the browsing channel", async {
            let requeue = BasicNackOptions {
                multiple: false,
                requeue: true,
            };
            for tag in &self.held {
                self.channel.basic_nack(*tag, requeue).await?;
            }
            Ok(self.channel.close(200, "OK".into()).await?)
        });
        let result = closed.await;
        close_within(self.answer_timeout, [], Some(&self.connection)).await;
        result
    }

    async fn bounded<T>(
        &self,
        action: &'static str,
        f: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        tokio::time::timeout(self.answer_timeout, f)
            .await
            .unwrap_or(Err(Error::Timeout {
                action,
                after: self.answer_timeout,
            }))
    }
}
