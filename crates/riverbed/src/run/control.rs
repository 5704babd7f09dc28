//! Where changes come from, and how each is answered: the admin API (`PUT /api/config`),
//! SIGHUP (the file read again) and the control queue (JSON key-value pairs). They all queue
//! on one [`Controller`]; the run loop takes them one at a time.

use std::path::PathBuf;

use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use super::change::Change;

/// Who asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// `PUT /api/config`.
    Api,
    /// SIGHUP.
    Signal,
    /// The control queue.
    Queue,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Api => "admin api",
            Origin::Signal => "SIGHUP",
            Origin::Queue => "control queue",
        }
    }
}

/// How a change ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The new pipeline runs.
    Applied,
    /// Not valid: it does not parse, or fails the check (the old pipeline runs on).
    Invalid,
    /// It touches what only a restart changes.
    Fixed,
    /// It could not be built or connected (the old pipeline runs on).
    Unavailable,
    /// The process is stopping.
    Stopping,
}

impl Verdict {
    /// The HTTP status that says it.
    pub fn http_status(self) -> u16 {
        match self {
            Verdict::Applied => 200,
            Verdict::Invalid => 422,
            Verdict::Fixed => 409,
            Verdict::Unavailable | Verdict::Stopping => 503,
        }
    }
}

/// The answer to a change: its verdict and the JSON body sent back (HTTP answer, control-queue
/// reply).
#[derive(Debug, Clone)]
pub struct Answer {
    pub verdict: Verdict,
    pub body: Value,
}

impl Answer {
    /// A refusal; `error` must hold no secret (the config check's errors are scrubbed).
    pub fn refused(verdict: Verdict, error: &str) -> Self {
        Answer {
            verdict,
            body: json!({"status": "refused", "reason": reason(verdict), "error": error}),
        }
    }
}

fn reason(v: Verdict) -> &'static str {
    match v {
        Verdict::Applied => "applied",
        Verdict::Invalid => "invalid",
        Verdict::Fixed => "needs_restart",
        Verdict::Unavailable => "unavailable",
        Verdict::Stopping => "stopping",
    }
}

/// One change waiting for the run loop.
pub struct Request {
    pub change: Change,
    pub origin: Origin,
    answer: oneshot::Sender<Answer>,
}

impl Request {
    /// Logs the answer and sends it to whoever asked.
    pub fn answer(self, a: Answer) {
        metrics::counter!("riverbed_reconfigurations_total", "outcome" => reason(a.verdict))
            .increment(1);
        match a.verdict {
            Verdict::Applied => {
                tracing::info!(origin = self.origin.as_str(), answer = %a.body,
                    "Configuration applied")
            }
            _ => tracing::warn!(origin = self.origin.as_str(), answer = %a.body,
                "Configuration refused; the running pipeline goes on"),
        }
        let _ = self.answer.send(a);
    }
}

/// Hands changes to the run loop; cheap to clone.
#[derive(Clone)]
pub struct Controller(mpsc::Sender<Request>);

impl Controller {
    /// A controller and the run loop's end of it.
    pub fn new() -> (Self, mpsc::Receiver<Request>) {
        let (tx, rx) = mpsc::channel(16);
        (Controller(tx), rx)
    }

    /// Submits `change` and waits for its answer.
    pub async fn submit(&self, change: Change, origin: Origin) -> Answer {
        let (tx, rx) = oneshot::channel();
        let request = Request {
            change,
            origin,
            answer: tx,
        };
        if self.0.send(request).await.is_err() {
            return Answer::refused(Verdict::Stopping, "the pipeline has ended");
        }
        rx.await
            .unwrap_or_else(|_| Answer::refused(Verdict::Stopping, "the pipeline has ended"))
    }

    /// Submits a JSON body of key-value pairs (the control queue's and the API's form).
    pub async fn submit_json(&self, body: &[u8], origin: Origin) -> Answer {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(pairs)) => self.submit(Change::Patch(pairs), origin).await,
            Ok(_) => Answer::refused(
                Verdict::Invalid,
                "the change must be a JSON object of key-value pairs",
            ),
            Err(e) => Answer::refused(Verdict::Invalid, &format!("not JSON: {e}")),
        }
    }
}

/// On every SIGHUP, reads `path` again and submits its text.
pub fn watch_hangups(path: PathBuf, controller: Controller) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!(file = %path.display(), "SIGHUP: reading the pipeline file again");
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    controller
                        .submit(Change::Replace(text), Origin::Signal)
                        .await;
                }
                Err(e) => tracing::warn!(file = %path.display(), error = %e,
                    "SIGHUP: cannot read the pipeline file; the running pipeline goes on"),
            }
        }
    });
    Ok(())
}

/// Serves the control queue until `stop`: each command is a JSON object of key-value pairs,
/// answered on its `reply_to`.
pub fn serve_queue(
    queue: riverbed_amqp::ControlQueue,
    controller: Controller,
    stop: tokio_util::sync::CancellationToken,
) {
    tracing::info!(queue = %queue.queue(), "Taking reconfiguration commands from the control queue");
    tokio::spawn(queue.serve(
        move |body| {
            let controller = controller.clone();
            async move {
                let answer = controller.submit_json(&body, Origin::Queue).await;
                serde_json::to_vec(&answer.body).expect("JSON values serialise")
            }
        },
        stop.cancelled_owned(),
    ));
}
