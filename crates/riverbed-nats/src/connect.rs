//! Connecting to the servers, and the JetStream calls the source and publishers share.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use async_nats::{ConnectOptions, Event, ServerAddr};

use crate::error::{Error, Result, jetstream};
use crate::settings::Connection;

/// Connects once (the client then reconnects by itself, forever, and logs each event).
pub(crate) async fn connect(c: &Connection) -> Result<async_nats::Client> {
    let first = c.servers[0].redacted().to_owned();
    let addrs = c
        .servers
        .iter()
        .map(|s| s.as_str().parse::<ServerAddr>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| Error::Connect {
            url: first.clone(),
            reason: "a server url is not valid".into(),
        })?;
    let mut options = ConnectOptions::new()
        .connection_timeout(c.timeout)
        .request_timeout(Some(c.timeout))
        .max_reconnects(None)
        .event_callback(|event| async move { log_event(event) });
    if let Some(name) = &c.name {
        options = options.name(name);
    }
    tokio::time::timeout(c.timeout + Duration::from_secs(1), options.connect(addrs))
        .await
        .map_err(|_| Error::Connect {
            url: first.clone(),
            reason: "timed out".into(),
        })?
        .map_err(|e| Error::Connect {
            url: first,
            reason: e.to_string(),
        })
}

fn log_event(event: Event) {
    match event {
        Event::Connected => {
            metrics::counter!("riverbed_nats_reconnects_total").increment(1);
            tracing::info!("NATS connection (re)established");
        }
        Event::Disconnected => tracing::warn!("NATS connection lost; reconnecting"),
        Event::SlowConsumer(sid) => tracing::warn!(sid, "NATS subscription is a slow consumer"),
        other => tracing::info!(event = %other, "NATS client event"),
    }
}

/// A JetStream context whose API requests wait at most `timeout`.
pub(crate) fn context(client: async_nats::Client, timeout: Duration) -> jetstream::Context {
    let mut js = jetstream::new(client);
    js.set_timeout(timeout);
    js
}

/// Makes sure stream `name` exists, creating it with `subjects` (file storage) if missing.
pub(crate) async fn ensure_stream(
    js: &jetstream::Context,
    name: &str,
    subjects: &[String],
) -> Result<stream::Stream> {
    let config = stream::Config {
        name: name.to_owned(),
        subjects: subjects.to_vec(),
        storage: stream::StorageType::File,
        ..Default::default()
    };
    js.get_or_create_stream(config)
        .await
        .map_err(|e| jetstream(format!("find or create stream `{name}`"), e))
}

/// Makes `stream` capture `subject` too, when none of its subjects matches it (a stream made
/// by another durable, or by hand, for other subjects).
pub(crate) async fn capture(
    js: &jetstream::Context,
    stream: stream::Stream,
    subject: &str,
) -> Result<()> {
    let mut config = stream.cached_info().config.clone();
    if config.subjects.iter().any(|p| matches_subject(p, subject)) {
        return Ok(());
    }
    let name = config.name.clone();
    config.subjects.push(subject.to_owned());
    js.update_stream(config)
        .await
        .map_err(|e| jetstream(format!("add subject `{subject}` to stream `{name}`"), e))?;
    tracing::info!(stream = %name, subject, "Stream captures one more subject");
    Ok(())
}

/// Whether subject `pattern` (with `*` for one token, `>` for the rest) matches `subject`.
pub(crate) fn matches_subject(pattern: &str, subject: &str) -> bool {
    let mut want = subject.split('.');
    for p in pattern.split('.') {
        match (p, want.next()) {
            (">", Some(_)) => return true,
            (_, None) => return false,
            ("*", Some(_)) => {}
            (p, Some(t)) if p == t => {}
            _ => return false,
        }
    }
    want.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::matches_subject;

    #[test]
    fn subject_patterns_match_as_the_server_does() {
        assert!(matches_subject(
            "riverbed.dlq.S.>",
            "riverbed.dlq.S.billing"
        ));
        assert!(matches_subject("a.*.c", "a.b.c"));
        assert!(matches_subject("a.b", "a.b"));
        assert!(!matches_subject("riverbed.dlq.S.>", "riverbed.dlq.S"));
        assert!(!matches_subject("a.*", "a.b.c"));
        assert!(!matches_subject("a.b.c", "a.b"));
        assert!(!matches_subject(
            "riverbed.dlq.S.billing",
            "riverbed.dlq.S.reporting"
        ));
    }
}
