//! Checked settings: the one place where raw configuration is validated and turned into types
//! the rest of the crate trusts (non-empty URL lists, prefetch in range, AMQP tables built).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use lapin::ExchangeKind;
use lapin::options::{ExchangeDeclareOptions, QueueDeclareOptions};
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::types::FieldTable;
use riverbed_core::tls::TlsFiles;

use crate::config::QueueType;
use crate::routing::RoutingKey;
use crate::url::BrokerUrl;

mod delivery_limit;
mod parts;
mod source;

pub(crate) use parts::short;

/// How to reach the broker.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionSettings {
    pub urls: Arc<[BrokerUrl]>,
    pub name: String,
    pub connect_timeout: Duration,
    pub tls: TlsSettings,
    pub reconnect_initial: Duration,
    pub reconnect_max: Duration,
}

/// What `amqps://` connections trust and present. `Debug` never shows the client key.
#[derive(Clone, Default)]
pub(crate) struct TlsSettings(pub OwnedTLSConfig);

impl TlsSettings {
    /// The files' contents as lapin wants them.
    pub fn from_files(files: TlsFiles) -> Self {
        TlsSettings(OwnedTLSConfig {
            identity: files.client.map(|c| OwnedIdentity::PKCS8 {
                pem: c.cert,
                key: c.key,
            }),
            cert_chain: files.ca.map(|ca| String::from_utf8_lossy(&ca).into_owned()),
        })
    }
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSettings")
            .field("ca", &self.0.cert_chain.is_some())
            .field("client_certificate", &self.0.identity.is_some())
            .finish()
    }
}

/// A queue to declare.
#[derive(Debug, Clone)]
pub(crate) struct QueueSpec {
    /// Empty for a server-named queue.
    pub name: String,
    pub options: QueueDeclareOptions,
    pub arguments: FieldTable,
}

/// An exchange to declare.
#[derive(Debug, Clone)]
pub(crate) struct ExchangeSpec {
    pub name: String,
    pub kind: ExchangeKind,
    pub options: ExchangeDeclareOptions,
    pub arguments: FieldTable,
}

/// A binding of the consumed queue.
#[derive(Debug, Clone)]
pub(crate) struct BindingSpec {
    pub exchange: String,
    pub routing_key: String,
    pub arguments: FieldTable,
}

/// Where a stream consumer starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamStart {
    First,
    Last,
    Next,
    Offset(u64),
    Timestamp(SystemTime),
}

/// Broker retry through TTL queues.
#[derive(Debug, Clone)]
pub(crate) struct RetrySpec {
    pub prefix: String,
    pub queue_type: QueueType,
    pub hold_limit: Duration,
}

/// Everything the source needs, checked.
#[derive(Debug, Clone)]
pub(crate) struct SourceSettings {
    pub connection: ConnectionSettings,
    pub queue: QueueSpec,
    pub exchanges: Vec<ExchangeSpec>,
    pub bindings: Vec<BindingSpec>,
    pub prefetch: u16,
    pub consumer_tag: String,
    /// Present exactly when the queue is a stream.
    pub stream: Option<StreamStart>,
    pub ack_interval: Duration,
    pub linger: Duration,
    pub retry: Option<RetrySpec>,
    pub dead_letter_queue: Option<QueueSpec>,
    pub confirm_timeout: Duration,
    /// Partitioned queues: `<queue>.0` .. `<queue>.<n-1>` behind the consistent-hash exchange
    /// `<queue>`, each with a single active consumer.
    pub partitions: Option<u16>,
    /// Arguments the consumed queue gets when the source creates it (see
    /// [`SourceSettings::limit_deliveries`]).
    pub created_with: FieldTable,
}

/// Everything the sink needs, checked.
#[derive(Debug, Clone)]
pub(crate) struct SinkSettings {
    pub connection: ConnectionSettings,
    pub exchange: String,
    pub routing_key: RoutingKey,
    pub exchanges: Vec<ExchangeSpec>,
    pub mandatory: bool,
    pub persistent: bool,
    pub confirm_timeout: Duration,
}

/// Everything the dead-letter queue needs, checked.
#[derive(Debug, Clone)]
pub(crate) struct DeadLetterSettings {
    pub connection: ConnectionSettings,
    pub queue: QueueSpec,
    pub confirm_timeout: Duration,
}
