//! The consumer lag of a RabbitMQ source: the ready messages of each consumed queue, from a
//! passive declare on a connection of its own. A stream has no ready count (its messages stay
//! after being read); its lag is not reported here.

use async_trait::async_trait;
use lapin::Connection;
use lapin::options::QueueDeclareOptions;
use lapin::types::{FieldTable, ShortString};
use riverbed_core::{Backlog, BacklogProbe};

use crate::connect::Connector;
use crate::settings::ConnectionSettings;

/// Asks the broker how many messages are ready in the source's queues (`<queue>.0..n-1` for a
/// partitioned source): delivered to no consumer yet.
pub struct AmqpBacklog {
    /// Bounds one round of questions.
    timeout: std::time::Duration,
    /// The queues' names, checked by the source's settings.
    queues: Vec<ShortString>,
    live: tokio::sync::Mutex<(Connector, Option<Connection>)>,
}

impl AmqpBacklog {
    pub(crate) fn new(settings: &ConnectionSettings, queues: Vec<String>) -> Self {
        AmqpBacklog {
            timeout: settings.connect_timeout,
            queues: queues.into_iter().map(ShortString::from).collect(),
            live: tokio::sync::Mutex::new((Connector::new(settings), None)),
        }
    }
}

#[async_trait]
impl BacklogProbe for AmqpBacklog {
    async fn backlog(&self) -> Result<Vec<Backlog>, String> {
        let mut live = self.live.lock().await;
        if !live.1.as_ref().is_some_and(|c| c.status().connected()) {
            let (c, _url) = live.0.connect().await.map_err(|e| e.to_string())?;
            live.1 = Some(c);
        }
        let connection = live.1.as_ref().expect("connected just above");
        let asked = async {
            // A passive declare of a missing queue closes the channel: one per question.
            let mut out = Vec::with_capacity(self.queues.len());
            for q in &self.queues {
                let ch = connection.create_channel().await?;
                let passive = QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                };
                let answer = ch
                    .queue_declare(q.clone(), passive, FieldTable::default())
                    .await;
                if let Ok(declared) = answer {
                    out.push(Backlog {
                        name: q.to_string(),
                        messages: u64::from(declared.message_count()),
                    });
                    let _ = ch.close(200, "backlog asked".into()).await;
                }
            }
            Ok::<_, lapin::Error>(out)
        };
        let answer = tokio::time::timeout(self.timeout, asked).await;
        match answer {
            Ok(Ok(out)) => Ok(out),
            Ok(Err(e)) => {
                live.1 = None;
                Err(format!("asking the queues' depth: {e}"))
            }
            Err(_) => {
                live.1 = None;
                Err("asking the queues' depth timed out".to_owned())
            }
        }
    }
}
