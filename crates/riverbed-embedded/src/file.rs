//! JSON-lines sinks (a file or stdout) and a dead-letter destination that only logs.

use std::path::PathBuf;

use async_trait::async_trait;
use riverbed_core::{BatchOutcome, DeadLetter, DeadLetterSink, Failure, Message, Sink};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

/// Where JSON lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineTarget {
    /// Standard output.
    Stdout,
    /// A file, appended to and synced after every batch.
    File(PathBuf),
}

/// Writes each message as one JSON line: the payload itself when it is JSON, or an envelope
/// with key, headers and metadata.
pub struct JsonLinesSink {
    target: LineTarget,
    envelope: bool,
    file: Mutex<Option<tokio::fs::File>>,
}

impl JsonLinesSink {
    /// A sink writing to `target`; with `envelope`, lines carry key, headers and position.
    pub fn new(target: LineTarget, envelope: bool) -> Self {
        JsonLinesSink {
            target,
            envelope,
            file: Mutex::new(None),
        }
    }

    fn line(&self, m: &Message, out: &mut Vec<u8>) {
        let body: serde_json::Value = m
            .json()
            .cloned()
            .or_else(|| serde_json::from_slice(&m.payload).ok())
            .unwrap_or_else(|| json!(String::from_utf8_lossy(&m.payload)));
        let v = if self.envelope {
            json!({"key": m.key, "headers": m.headers, "position": m.meta.position, "message_id": m.meta.message_id, "payload": body})
        } else {
            body
        };
        serde_json::to_writer(&mut *out, &v).expect("JSON serialises");
        out.push(b'\n');
    }
}

#[async_trait]
impl Sink for JsonLinesSink {
    async fn write(&self, batch: &[Message]) -> BatchOutcome {
        let mut buf = Vec::with_capacity(batch.len() * 128);
        for m in batch {
            self.line(m, &mut buf);
        }
        let result = match &self.target {
            LineTarget::Stdout => {
                let mut out = tokio::io::stdout();
                match out.write_all(&buf).await {
                    Ok(()) => out.flush().await,
                    Err(e) => Err(e),
                }
            }
            LineTarget::File(path) => {
                let mut guard = self.file.lock().await;
                if guard.is_none() {
                    match tokio::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(path)
                        .await
                    {
                        Ok(f) => *guard = Some(f),
                        Err(e) => {
                            return BatchOutcome::transient(Failure::unavailable(format!(
                                "{}: {e}",
                                path.display()
                            )));
                        }
                    }
                }
                let f = guard.as_mut().expect("opened above");
                match f.write_all(&buf).await {
                    Ok(()) => f.sync_data().await,
                    Err(e) => Err(e),
                }
            }
        };
        match result {
            Ok(()) => BatchOutcome::Committed,
            Err(e) => BatchOutcome::transient(Failure::unavailable(e.to_string())),
        }
    }
}

/// A dead-letter destination that only logs (for sources with nowhere durable to put letters,
/// such as the generator). Every letter is a structured `error` log line and a metric.
pub struct LogOnlyDeadLetters;

#[async_trait]
impl DeadLetterSink for LogOnlyDeadLetters {
    fn describe(&self) -> String {
        "log only".into()
    }

    async fn write(&self, letters: &[DeadLetter]) -> Result<(), Failure> {
        for l in letters {
            tracing::error!(reason = %l.reason, error = %l.error, payload = %String::from_utf8_lossy(&l.message.payload), "Dead letter (not stored)");
        }
        Ok(())
    }
}

/// Dead letters as JSON lines appended to a file, synced before the originals are acked.
pub struct FileDeadLetters {
    sink: JsonLinesSink,
    path: PathBuf,
}

impl FileDeadLetters {
    /// Appends letters to `path`.
    pub fn new(path: PathBuf) -> Self {
        FileDeadLetters {
            sink: JsonLinesSink::new(LineTarget::File(path.clone()), false),
            path,
        }
    }
}

#[async_trait]
impl DeadLetterSink for FileDeadLetters {
    fn describe(&self) -> String {
        format!("file {}", self.path.display())
    }

    async fn write(&self, letters: &[DeadLetter]) -> Result<(), Failure> {
        let ms = |t: std::time::SystemTime| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0)
        };
        let lines: Vec<Message> = letters
            .iter()
            .map(|l| {
                Message::from_json(json!({
                    "reason": l.reason,
                    "error": l.error,
                    "attempts": l.attempts,
                    "stage": l.stage,
                    "first_failure_ms": ms(l.first_failure),
                    "last_failure_ms": ms(l.last_failure),
                    "key": l.message.key,
                    "message_id": l.message.meta.message_id,
                    "position": l.message.meta.position,
                    "headers": l.message.headers,
                    "payload": String::from_utf8_lossy(&l.message.payload),
                }))
            })
            .collect();
        match self.sink.write(&lines).await {
            BatchOutcome::Committed => Ok(()),
            other => Err(other
                .get(0)
                .failure()
                .cloned()
                .unwrap_or_else(|| Failure::unavailable("write failed"))),
        }
    }
}
