//! The consumer lag of a JetStream source: its durable's pending count, from consumer info on
//! a connection of its own.

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
    client: tokio::sync::Mutex<Option<async_nats::Client>>,
}

impl NatsBacklog {
    pub(crate) fn new(connection: Connection, stream: String, durable: String) -> Self {
        NatsBacklog {
            connection,
            stream,
            durable,
            client: tokio::sync::Mutex::new(None),
        }
    }
}

#[async_trait]
impl BacklogProbe for NatsBacklog {
    async fn backlog(&self) -> Result<Vec<Backlog>, String> {
        let client = {
            let mut held = self.client.lock().await;
            match &*held {
                Some(c) => c.clone(),
                None => {
                    let c = connect(&self.connection).await.map_err(|e| e.to_string())?;
                    *held = Some(c.clone());
                    c
                }
            }
        };
        let js = context(client, self.connection.timeout);
        let stream = js
            .get_stream(&self.stream)
            .await
            .map_err(|e| jetstream(format!("find stream `{}`", self.stream), e).to_string())?;
        let info = stream
            .consumer_info(&self.durable)
            .await
            .map_err(|e| jetstream(format!("ask consumer `{}`", self.durable), e).to_string())?;
        Ok(vec![Backlog {
            name: format!("{}/{}", self.stream, self.durable),
            messages: info.num_pending,
        }])
    }
}
