//! How to reach PostgreSQL: URL (password redacted), TLS, pool size, timeouts, application name.

use std::time::Duration;

use riverbed_core::tls::TlsConfig;
use serde::Deserialize;
use sqlx::postgres::{PgConnectOptions, PgPool, PgSslMode};

use crate::error::{Error, Result};
use crate::postgres::postgres_pool;
use crate::url::DatabaseUrl;

/// How to reach PostgreSQL.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConnectionConfig {
    /// Connection URL, `postgres://user:password@host:5432/db` (the password never appears
    /// in logs).
    pub url: DatabaseUrl,
    /// Most connections the pool opens.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// How long to wait for a free or new connection before the write fails transiently.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Every statement is cancelled after this long (a transient failure, retried).
    #[serde(default = "default_statement_timeout", with = "humantime_serde")]
    pub statement_timeout: Duration,
    /// The name these connections show in `pg_stat_activity`.
    #[serde(default = "default_application_name")]
    pub application_name: String,
    /// TLS, as libpq's `sslmode`: `disable`, `allow`, `prefer`, `require` (encrypted; the
    /// certificate is checked against `tls.ca_file` when one is given), `verify-ca` (signed by
    /// a trusted CA) or `verify-full` (and issued for the host connected to). Default: the URL's
    /// `sslmode`, else `verify-full` when `tls` is set, else `prefer`.
    #[serde(default)]
    pub ssl_mode: Option<SslMode>,
    /// Certificate files: `ca_file` (trusted besides the system roots), and `cert_file` /
    /// `key_file` for servers that ask for a client certificate.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

/// libpq's `sslmode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    /// Plain connections only.
    Disable,
    /// Plain first, TLS if the server insists.
    Allow,
    /// TLS first, plain if the server has no TLS.
    Prefer,
    /// TLS only (verified against `tls.ca_file` when given).
    Require,
    /// TLS only, the certificate signed by a trusted CA.
    VerifyCa,
    /// TLS only, the certificate signed by a trusted CA and issued for the host.
    VerifyFull,
}

impl From<SslMode> for PgSslMode {
    fn from(m: SslMode) -> Self {
        match m {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Allow => PgSslMode::Allow,
            SslMode::Prefer => PgSslMode::Prefer,
            SslMode::Require => PgSslMode::Require,
            SslMode::VerifyCa => PgSslMode::VerifyCa,
            SslMode::VerifyFull => PgSslMode::VerifyFull,
        }
    }
}

fn default_application_name() -> String {
    "riverbed".into()
}

fn default_max_connections() -> u32 {
    8
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_statement_timeout() -> Duration {
    Duration::from_secs(30)
}

impl PostgresConnectionConfig {
    /// The driver's options: the URL with this config's TLS settings applied.
    pub fn options(&self) -> Result<PgConnectOptions> {
        let mut options: PgConnectOptions = self
            .url
            .expose()
            .parse()
            .map_err(|e| Error::Config(format!("url {}: {e}", self.url)))?;
        let url_mode = self.url.expose().contains("sslmode=");
        if let Some(tls) = &self.tls {
            let files = tls.read().map_err(|e| Error::Config(e.to_string()))?;
            if let Some(ca) = files.ca {
                options = options.ssl_root_cert_from_pem(ca);
            }
            if let Some(client) = files.client {
                options = options
                    .ssl_client_cert_from_pem(client.cert)
                    .ssl_client_key_from_pem(client.key);
            }
            if !url_mode {
                options = options.ssl_mode(PgSslMode::VerifyFull);
            }
        }
        if let Some(mode) = self.ssl_mode {
            options = options.ssl_mode(mode.into());
        }
        Ok(options.application_name(&self.application_name))
    }

    /// Opens the pool.
    pub async fn connect(&self) -> Result<PgPool> {
        Ok(postgres_pool(
            self.options()?,
            self.max_connections,
            self.connect_timeout,
            self.statement_timeout,
        )
        .await?)
    }
}
