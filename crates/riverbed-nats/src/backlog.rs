//! The consumer lag of a JetStream source: its durable's pending count, from consumer info on
//! a connection of its own.

use async_nats::jetstream::consumer::pull;
use async_trait::async_trait;
use riverbed_core::{Backlog, BacklogProbe};

use crate::connect::{connect, context};
use crate::error::jetstream;
use crate::settings::Connection;

/// Asks the server how many messages of the stream match the durable's filter and have not
/// been delivered to it yet (`num_pending`).
pub struct NatsBacklog {
    connection: Connection,
    stream: String,
    durable: String,
    js: tokio::sync::Mutex<Option<async_nats::jetstream::Context>>,
}

impl NatsBacklog {
    pub(crate) fn new(connection: Connection, stream: String, durable: String) -> Self {
        NatsBacklog {
            connection,
            stream,
            durable,
            js: tokio::sync::Mutex::new(None),
        }
    }
}

#[async_trait]
impl BacklogProbe for NatsBacklog {
    async fn backlog(&self) -> Result<Vec<Backlog>, String> {
        let js = {
            let mut held = self.js.lock().await;
            match &*held {
                Some(js) => js.clone(),
                None => {
                    let c = connect(&self.connection).await.map_err(|e| e.to_string())?;
                    let js = context(c, self.connection.timeout);
                    *held = Some(js.clone());
                    js
                }
            }
        };
        // One request: the consumer's info comes with finding it.
        let consumer = js
            .get_consumer_from_stream::<pull::Config, _, _>(&self.durable, &self.stream)
            .await
            .map_err(|e| jetstream(format!("ask consumer `{}`", self.durable), e).to_string())?;
        let info = consumer.cached_info();
        Ok(vec![Backlog {
            name: format!("{}/{}", self.stream, self.durable),
            messages: info.num_pending,
        }])
    }
}
