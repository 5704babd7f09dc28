//! The errors of the RabbitMQ connector, and which of them are worth retrying.

use lapin::protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError};

/// Everything that can go wrong in the RabbitMQ connector.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration field is invalid; the message names the field.
    #[error("invalid amqp configuration: `{field}` {reason}")]
    Config {
        /// The field, as written in the configuration (`bindings[1].exchange`).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A `tls` file cannot be used; the message names the option and the file.
    #[error("invalid amqp configuration: {0}")]
    Tls(#[from] riverbed_core::tls::TlsError),
    /// A broker URL could not be parsed (the URL itself is not repeated: it may hold a password).
    #[error("invalid broker url #{index}: {reason}")]
    Url {
        /// The position of the URL in `urls`, from 0.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// No broker URL accepted a connection.
    #[error("could not connect to {url}: {source}")]
    Connect {
        /// The (redacted) URL tried last.
        url: String,
        /// The last connection error.
        #[source]
        source: lapin::Error,
    },
    /// Connecting took longer than the connect timeout.
    #[error("connecting to {url} timed out")]
    ConnectTimeout {
        /// The (redacted) URL.
        url: String,
    },
    /// The broker did not answer in time (a stalled or blocked connection).
    #[error("{action} timed out after {}", humantime::format_duration(*.after))]
    Timeout {
        /// What was asked, such as "open a channel".
        action: &'static str,
        /// How long it waited.
        after: std::time::Duration,
    },
    /// The broker refused to declare, bind or consume something.
    #[error("broker refused to {action}: {source}")]
    Topology {
        /// What was asked, such as "declare queue `orders`".
        action: String,
        /// The broker's answer.
        #[source]
        source: lapin::Error,
    },
    /// Any other AMQP failure (a lost channel, a closed connection).
    #[error("amqp operation failed: {0}")]
    Amqp(#[from] lapin::Error),
}

/// A configuration error for `field`.
pub(crate) fn config(field: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::Config {
        field: field.into(),
        reason: reason.into(),
    }
}

/// The connector's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// True when trying again cannot help without a change of configuration or broker setup
    /// (refused credentials, a missing exchange, a queue declared with other arguments).
    pub fn is_fatal(&self) -> bool {
        match self {
            Error::Config { .. } | Error::Tls(_) | Error::Url { .. } => true,
            Error::Connect { source, .. }
            | Error::Topology { source, .. }
            | Error::Amqp(source) => is_fatal_amqp(source),
            Error::ConnectTimeout { .. } | Error::Timeout { .. } => false,
        }
    }
}

/// Broker answers that mean "this will never work as configured", and a TLS handshake that
/// refused the broker's certificate (or the broker refused ours).
fn is_fatal_amqp(e: &lapin::Error) -> bool {
    if let lapin::ErrorKind::IOError(io) = e.kind() {
        return is_certificate_refusal(io);
    }
    let lapin::ErrorKind::ProtocolError(amqp) = e.kind() else {
        return false;
    };
    matches!(
        amqp.kind(),
        AMQPErrorKind::Soft(
            AMQPSoftError::ACCESSREFUSED
                | AMQPSoftError::NOTFOUND
                | AMQPSoftError::PRECONDITIONFAILED
        ) | AMQPErrorKind::Hard(
            AMQPHardError::NOTALLOWED
                | AMQPHardError::INVALIDPATH
                | AMQPHardError::COMMANDINVALID
                | AMQPHardError::SYNTAXERROR
                | AMQPHardError::NOTIMPLEMENTED
        )
    )
}

/// Whether `io` is a TLS certificate verification failure, on either side.
fn is_certificate_refusal(io: &std::io::Error) -> bool {
    use rustls::AlertDescription as A;
    let tls = io.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>());
    matches!(
        tls,
        Some(
            rustls::Error::InvalidCertificate(_)
                | rustls::Error::NoCertificatesPresented
                | rustls::Error::AlertReceived(
                    A::BadCertificate
                        | A::UnknownCA
                        | A::CertificateRequired
                        | A::CertificateUnknown
                        | A::UnsupportedCertificate
                )
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_errors_are_fatal_io_errors_are_not() {
        let e = Error::Config {
            field: "prefetch".into(),
            reason: "must be at least 1".into(),
        };
        assert!(e.is_fatal());
        assert_eq!(
            e.to_string(),
            "invalid amqp configuration: `prefetch` must be at least 1"
        );
        let io = Error::Amqp(lapin::Error::from(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )));
        assert!(!io.is_fatal());
    }

    #[test]
    fn a_refused_tls_certificate_is_fatal() {
        let refused = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let e = Error::Amqp(lapin::Error::from(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            refused,
        )));
        assert!(e.is_fatal());
    }
}
