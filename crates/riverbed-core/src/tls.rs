//! TLS options the connectors share: which certificate authorities to trust and an optional
//! client certificate, as PEM files. Each connector hands them to its own TLS client.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// `[... .tls]`: certificate files for a TLS connection (`amqps://`, `rediss://`, PostgreSQL
/// `ssl_mode`). The server certificate is always verified; these only say against what.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of the certificate authorities that sign the server's certificate (a private
    /// CA). Without it, the system's root certificates are used.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM file of a client certificate (chain), for servers that require one; needs
    /// `key_file`.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// PEM file of the client certificate's private key (PKCS#8, PKCS#1 or SEC1).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

/// The contents of the files a [`TlsConfig`] names.
#[derive(Clone, Default)]
pub struct TlsFiles {
    /// PEM certificate authorities to trust, if a file was named.
    pub ca: Option<Vec<u8>>,
    /// Client certificate and key, if named.
    pub client: Option<ClientIdentity>,
}

/// A client certificate (PEM chain) and its private key (PEM). `Debug` never shows the key.
#[derive(Clone)]
pub struct ClientIdentity {
    /// The certificate chain.
    pub cert: Vec<u8>,
    /// The private key.
    pub key: Vec<u8>,
}

/// A TLS option that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    #[error("tls.{field}: cannot read {}: {source}", path.display())]
    Read {
        /// `ca_file`, `cert_file` or `key_file`.
        field: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file holds no PEM block of the expected kind.
    #[error("tls.{field}: {} holds no PEM {what}", path.display())]
    NotPem {
        /// `ca_file`, `cert_file` or `key_file`.
        field: &'static str,
        /// The file.
        path: PathBuf,
        /// What was expected.
        what: &'static str,
    },
    /// Only one of `cert_file` and `key_file` was set.
    #[error("tls: `cert_file` and `key_file` go together")]
    HalfIdentity,
}

impl TlsConfig {
    /// Reads and checks the named files.
    pub fn read(&self) -> Result<TlsFiles, TlsError> {
        let ca = self
            .ca_file
            .as_deref()
            .map(|p| read_pem("ca_file", p, "CERTIFICATE"))
            .transpose()?;
        let client = match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => Some(ClientIdentity {
                cert: read_pem("cert_file", cert, "CERTIFICATE")?,
                key: read_pem("key_file", key, "PRIVATE KEY")?,
            }),
            (None, None) => None,
            _ => return Err(TlsError::HalfIdentity),
        };
        Ok(TlsFiles { ca, client })
    }
}

/// The file at `path`, which must hold a PEM block whose label ends with `label`.
fn read_pem(field: &'static str, path: &Path, label: &'static str) -> Result<Vec<u8>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        field,
        path: path.to_owned(),
        source,
    })?;
    let text = String::from_utf8_lossy(&bytes);
    let found = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("-----BEGIN "))
        .any(|l| l.trim_end_matches('-').ends_with(label));
    if !found {
        return Err(TlsError::NotPem {
            field,
            path: path.to_owned(),
            what: label,
        });
    }
    Ok(bytes)
}

impl fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsFiles")
            .field("ca", &self.ca.as_ref().map(|c| c.len()))
            .field("client", &self.client)
            .finish()
    }
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientIdentity(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_files_are_read_and_checked() {
        let dir = std::env::temp_dir().join(format!("riverbed-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.pem");
        let key = dir.join("key.pem");
        std::fs::write(
            &ca,
            "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        std::fs::write(
            &key,
            "-----BEGIN EC PRIVATE KEY-----\nAA==\n-----END EC PRIVATE KEY-----\n",
        )
        .unwrap();
        let config = |ca_file: &Path, cert: Option<&Path>, key: Option<&Path>| TlsConfig {
            ca_file: Some(ca_file.to_owned()),
            cert_file: cert.map(Path::to_owned),
            key_file: key.map(Path::to_owned),
        };
        let files = config(&ca, Some(&ca), Some(&key)).read().unwrap();
        assert!(files.ca.is_some() && files.client.is_some());
        assert!(!format!("{files:?}").contains("AA=="));
        let e = config(&key, None, None).read().unwrap_err().to_string();
        assert!(
            e.starts_with("tls.ca_file: ") && e.ends_with("holds no PEM CERTIFICATE"),
            "{e}"
        );
        let e = config(&ca, Some(&ca), None).read().unwrap_err().to_string();
        assert_eq!(e, "tls: `cert_file` and `key_file` go together");
        let e = config(&dir.join("none"), None, None)
            .read()
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("tls.ca_file: cannot read "), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
