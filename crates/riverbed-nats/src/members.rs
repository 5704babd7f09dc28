//! Who is there: the instances sharing a partitioned NATS pipeline each publish to their own
//! subject of a small stream every check. The stream keeps one message per subject and
//! drops messages older than `max_age`, so the messages it holds are the live instances,
//! which tells each instance its fair share of the partitions.

use std::time::Duration;

use async_nats::jetstream::{self, stream};

use crate::connect::{connect, context};
use crate::error::{Result, jetstream};
use crate::settings::Connection;

/// This instance's entry in the stream of its pipeline's instances.
pub struct Members {
    js: jetstream::Context,
    stream: String,
    subject: String,
}

impl Members {
    /// Joins stream `name` (created, in memory, with `max_age = ttl` if missing) as `id`.
    pub(crate) async fn join(
        connection: &Connection,
        name: &str,
        id: &str,
        ttl: Duration,
    ) -> Result<Self> {
        let js = context(connect(connection).await?, connection.timeout);
        let config = stream::Config {
            name: name.to_owned(),
            subjects: vec![format!("{name}.*")],
            max_messages_per_subject: 1,
            max_age: ttl,
            storage: stream::StorageType::Memory,
            description: Some("riverbed: the live instances of a partitioned pipeline".into()),
            ..Default::default()
        };
        js.get_or_create_stream(config)
            .await
            .map_err(|e| jetstream(format!("find or create stream `{name}`"), e))?;
        let members = Members {
            js,
            stream: name.to_owned(),
            subject: format!("{name}.{id}"),
        };
        members.beat().await?;
        Ok(members)
    }

    /// Says this instance is still there.
    pub async fn beat(&self) -> Result<()> {
        self.js
            .publish(self.subject.clone(), bytes::Bytes::from_static(b"1"))
            .await
            .map_err(|e| jetstream(format!("publish to `{}`", self.subject), e))?
            .await
            .map_err(|e| jetstream(format!("publish to `{}`", self.subject), e))?;
        Ok(())
    }

    /// The instances heard from within `max_age` (this one included).
    pub async fn count(&self) -> Result<usize> {
        // Finding the stream asks for its info: the state is in the answer.
        let s = self
            .js
            .get_stream(&self.stream)
            .await
            .map_err(|e| jetstream(format!("find stream `{}`", self.stream), e))?;
        let live = s.cached_info().state.messages;
        Ok(usize::try_from(live).unwrap_or(usize::MAX).max(1))
    }
}
