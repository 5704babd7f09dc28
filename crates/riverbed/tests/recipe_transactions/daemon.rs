//! The real `riverbed` binary as a child process: JSON logs collected as they come (a full pipe
//! would stall the daemon), signals, the exit summary, and a kill when a test fails.

// Shared by several test binaries; each uses a part of it.
#![allow(dead_code)]

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A running `riverbed run CONFIG`.
pub struct Daemon {
    name: &'static str,
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    /// Starts `riverbed run config` with JSON logs filtered by `filter`.
    pub fn spawn(name: &'static str, config: &Path, filter: &str) -> Daemon {
        let mut child = Command::new(env!("CARGO_BIN_EXE_riverbed"))
            .args(["--log-format", "json", "run", "--quiet"])
            .arg(config)
            .env("RIVERBED_LOG", filter)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting riverbed");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Daemon { name, child, logs }
    }

    /// Every log line so far.
    pub fn lines(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// The position and fields of the first log line whose message is `message` and whose
    /// fields satisfy `pred`.
    pub fn find(&self, message: &str, pred: impl Fn(&Value) -> bool) -> Option<(usize, Value)> {
        self.lines().iter().enumerate().find_map(|(i, l)| {
            let v: Value = serde_json::from_str(l).ok()?;
            let fields = v.get("fields")?;
            (fields["message"] == message && pred(fields)).then(|| (i, fields.clone()))
        })
    }

    /// Waits up to `limit` for a line as [`Daemon::find`] describes.
    pub async fn wait_log(
        &self,
        message: &str,
        limit: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> (usize, Value) {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(found) = self.find(message, &pred) {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "{}: no log `{message}` within {limit:?}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills the daemon at once (SIGKILL), as a crash or an OOM kill would, and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Asks the daemon to stop (SIGTERM).
    pub fn terminate(&self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    }

    /// Waits up to `limit` for the exit; returns the status and the JSON summary it printed.
    pub async fn exit(&mut self, limit: Duration) -> (ExitStatus, Value) {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let out = std::io::read_to_string(self.child.stdout.take().unwrap()).unwrap();
                let summary = out
                    .lines()
                    .last()
                    .and_then(|l| serde_json::from_str(l).ok())
                    .unwrap_or_default();
                return (status, summary);
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {limit:?}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            let lines = self.lines();
            eprintln!("--- last log lines of {} ---", self.name);
            for l in &lines[lines.len().saturating_sub(40)..] {
                eprintln!("{}", redacted(l));
            }
        }
    }
}

/// `line` with the credentials of any URL hidden.
pub fn redacted(line: &str) -> String {
    riverbed_core::redact::urls_in(line)
}

#[test]
fn redaction_hides_user_and_password() {
    assert_eq!(
        redacted(r#"{"url":"amqp://guest:guest@127.0.0.1:5672/%2f","x":"redis://h"}"#),
        r#"{"url":"amqp://***@127.0.0.1:5672/%2f","x":"redis://h"}"#
    );
}
