//! Opening connections: one attempt per URL in turn, with a timeout, credentials kept out of logs.

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use lapin::{Channel, Connection, ConnectionProperties};

use crate::error::{Error, Result};
use crate::settings::{ConnectionSettings, TlsSettings};
use crate::url::BrokerUrl;

/// Rotates through the broker URLs: each call starts with the URL after the one used last.
#[derive(Debug)]
pub(crate) struct Connector {
    urls: Arc<[BrokerUrl]>,
    next: usize,
    name: String,
    timeout: Duration,
    tls: TlsSettings,
}

impl Connector {
    /// A connector over the settings' URLs (never empty: the settings checked it).
    pub fn new(c: &ConnectionSettings) -> Self {
        Connector {
            urls: c.urls.clone(),
            next: 0,
            name: c.name.clone(),
            timeout: c.connect_timeout,
            tls: c.tls.clone(),
        }
    }

    /// Tries every URL once, starting with the next in turn; returns the first connection and
    /// the URL it went to, or the last error.
    pub async fn connect(&mut self) -> Result<(Connection, BrokerUrl)> {
        let mut last = None;
        for _ in 0..self.urls.len() {
            let url = self.urls[self.next % self.urls.len()].clone();
            self.next = (self.next + 1) % self.urls.len();
            let props =
                ConnectionProperties::default().with_connection_name(self.name.clone().into());
            let attempt = async {
                let runtime = lapin::runtime::default_runtime()?;
                let uri = url.uri().clone();
                Connection::connect_uri_with_config(uri, props, self.tls.0.clone(), runtime).await
            };
            match tokio::time::timeout(self.timeout, attempt).await {
                Ok(Ok(conn)) => return Ok((conn, url)),
                Ok(Err(source)) => {
                    let e = Error::Connect {
                        url: url.to_string(),
                        source,
                    };
                    if e.is_fatal() {
                        return Err(e);
                    }
                    tracing::debug!(url = %url, error = %e, "Connection attempt failed");
                    last = Some(e);
                }
                Err(_) => {
                    tracing::debug!(url = %url, "Connection attempt timed out");
                    last = Some(Error::ConnectTimeout {
                        url: url.to_string(),
                    });
                }
            }
        }
        Err(last.expect("the settings guarantee at least one url"))
    }
}

/// Says goodbye to the broker: closes `channels` (explicitly: lapin 4 turns the implicit close
/// of a dropped channel that is already closing into a connection error), then `connection`,
/// all within `limit`. A broker that stopped answering must not hold a shutdown: returns false
/// when the time ran out, and the caller leaves without the goodbye.
pub(crate) async fn close_within<'a>(
    limit: Duration,
    channels: impl IntoIterator<Item = &'a Channel>,
    connection: Option<&Connection>,
) -> bool {
    let goodbye = async {
        join_all(channels.into_iter().map(|ch| ch.close(200, "OK".into()))).await;
        if let Some(c) = connection.filter(|c| c.status().connected()) {
            let _ = c.close(200, "OK".into()).await;
        }
    };
    tokio::time::timeout(limit, goodbye).await.is_ok()
}
