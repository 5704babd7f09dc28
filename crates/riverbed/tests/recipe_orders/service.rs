//! `riverbed` processes: started in the recipe's directory, stopped with SIGTERM or SIGKILL,
//! never left behind.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use super::LIMIT;
use super::recipe::Recipe;

/// Waits for `child` to exit, at most `limit`.
pub async fn exit(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "riverbed did not exit within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A `riverbed run`, killed when dropped before it stopped; its log (stderr, warnings and
/// errors) is shown when the test fails.
pub struct Service {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Service {
    /// Runs `config` in the recipe's directory; `name` names its log, `<name>.log` there.
    pub fn start(recipe: &Recipe, name: &str, config: &Path) -> Service {
        let log = recipe.dir().join(format!("{name}.log"));
        let stderr = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_riverbed"))
            .args(["run", "--quiet"])
            .arg(config)
            .current_dir(recipe.dir())
            .env("RIVERBED_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        Service {
            name: name.to_owned(),
            child: Some(child),
            log,
        }
    }

    /// Waits for the run to end by itself; its exit status and one-line summary.
    pub async fn finish(mut self) -> (ExitStatus, Value) {
        let mut child = self.child.take().unwrap();
        let status = exit(&mut child, LIMIT).await;
        let out = std::io::read_to_string(child.stdout.take().unwrap()).unwrap();
        let summary = out
            .lines()
            .last()
            .and_then(|l| serde_json::from_str(l).ok())
            .unwrap_or_default();
        (status, summary)
    }

    /// SIGTERM: the service drains, settles and exits 0, with nothing dead-lettered; returns
    /// its summary.
    pub async fn stop(self) -> Value {
        let pid = Pid::from_raw(self.child.as_ref().unwrap().id() as i32);
        kill(pid, Signal::SIGTERM).unwrap();
        let name = self.name.clone();
        let (status, summary) = self.finish().await;
        assert!(status.success(), "{name} exited with {status}");
        assert_eq!(summary["drained"], true, "{name} drained: {summary}");
        assert_eq!(summary["dead_lettered"], 0, "{name}: {summary}");
        summary
    }

    /// SIGKILL: no drain, no goodbye.
    pub fn crash(mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            eprintln!("--- {} log, last lines ---", self.name);
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}
