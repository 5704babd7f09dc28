//! `riverbed top` in a real terminal (`cargo test top`): tmux runs it against a daemon whose
//! messages flow; the screen shows the figures of the admin API and refreshes, a missing token
//! is said on screen, and `q` quits with status 0.

#[path = "admin/client.rs"]
mod client;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use riverbed_core::testing::require_program;

use client::{Daemon, free_port, get, wait_for};

const TOKEN: &str = "t0p-t0ken";
const LIMIT: Duration = Duration::from_secs(30);

/// A tmux server of the test's own (its own socket); dropping it kills that server only.
struct Tmux {
    program: PathBuf,
    socket: String,
}

impl Tmux {
    fn run(&self, args: &[&str]) -> String {
        let out = Command::new(&self.program)
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("running tmux");
        assert!(out.status.success(), "tmux {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts `command` in a detached 120x40 session `name`; its exit status lands in `done`.
    fn start(&self, name: &str, command: &str, done: &Path) {
        let shell = format!("{command}; echo $? > {}", done.display());
        self.run(&[
            "new-session",
            "-d",
            "-s",
            name,
            "-x",
            "120",
            "-y",
            "40",
            &shell,
        ]);
    }

    fn screen(&self, name: &str) -> String {
        self.run(&["capture-pane", "-p", "-t", name])
    }

    /// Polls the screen of `name` until `accept` takes it; panics after [`LIMIT`] with it.
    fn wait(&self, name: &str, what: &str, accept: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + LIMIT;
        loop {
            let screen = self.screen(name);
            if accept(&screen) {
                return screen;
            }
            assert!(Instant::now() < deadline, "waited for {what}:\n{screen}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new(&self.program)
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

/// The number after the word `label` on the screen (`acked 1234`), if shown.
fn figure(screen: &str, label: &str) -> Option<f64> {
    let words: Vec<&str> = screen.split_whitespace().collect();
    words
        .windows(2)
        .find(|w| w[0] == label)
        .and_then(|w| w[1].parse().ok())
}

/// Waits until `done` holds the exit status, and returns it.
fn exit_status(done: &Path) -> String {
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Ok(s) = std::fs::read_to_string(done).map(|s| s.trim().to_owned())
            && !s.is_empty()
        {
            return s;
        }
        assert!(Instant::now() < deadline, "riverbed top did not quit");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn top_shows_the_api_figures_refreshes_and_quits_on_q() {
    let Some(program) = require_program("tmux", vec!["/usr/bin/tmux".into()]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let port = free_port();
    let cfg = dir.path().join("gauges.toml");
    std::fs::write(
        &cfg,
        format!(
            "[source]\nkind = \"generate\"\ndata = \"sensors\"\nrate = 1000\nmalformed_every = 50\n\n\
             [pipeline]\nkey = \"/sensor_id\"\npartitions = 2\n\n\
             [[sinks]]\nname = \"gauge-sink\"\nkind = \"noop\"\n\n[dead_letter]\nkind = \"log\"\n\n\
             [admin]\nlisten = \"127.0.0.1:{port}\"\ntoken_file = \"{}\"\n",
            token_file.display()
        ),
    )
    .unwrap();
    let mut daemon = Daemon::spawn(&cfg, &[]);
    wait_for(port, "/api/status", Some(TOKEN), LIMIT, |a| {
        a.status == 200 && a.json()["counters"]["acked"].as_u64() > Some(0)
    });

    let tmux = Tmux {
        program,
        socket: format!("riverbed-top-test-{}", std::process::id()),
    };
    let bin = env!("CARGO_BIN_EXE_riverbed");
    let admin = format!("http://127.0.0.1:{port}");
    let done = dir.path().join("done");
    let command = format!(
        "{bin} top --admin {admin} --token-file {}",
        token_file.display()
    );
    tmux.start("top", &command, &done);
    let first = tmux.wait("top", "figures on screen", |s| {
        figure(s, "acked").is_some_and(|n| n > 0.0)
            && figure(s, "acked/s").is_some_and(|r| r > 0.0)
            && s.contains("malformed_payload")
    });
    let status = get(port, "/api/status", Some(TOKEN)).unwrap().json();
    assert!(first.contains("riverbed top gauges"), "{first}");
    assert!(first.contains("gauge-sink"), "{first}");
    assert_eq!(figure(&first, "partitions"), Some(2.0), "{first}");
    let acked = figure(&first, "acked").unwrap();
    let api_acked = status["counters"]["acked"].as_f64().unwrap();
    assert!(acked <= api_acked, "screen {acked} vs API {api_acked}");
    let rate = figure(&first, "acked/s").unwrap();
    assert!(
        rate > 100.0 && rate < 3000.0,
        "acked/s near the generated 1000/s: {rate}\n{first}"
    );
    let series = get(port, "/api/series", Some(TOKEN)).unwrap().json();
    let rates: Vec<f64> = series["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["acked"].as_f64().unwrap() * 10.0).round() / 10.0)
        .collect();
    assert!(
        rates.iter().any(|r| (r - rate).abs() < 0.051),
        "{rate} is one of the API's samples {rates:?}"
    );

    // It refreshes: the acked count on screen grows.
    tmux.wait("top", "acked to grow", |s| {
        figure(s, "acked").is_some_and(|n| n > acked)
    });
    tmux.run(&["send-keys", "-t", "top", "q"]);
    assert_eq!(exit_status(&done), "0", "q quits cleanly");

    // Without the token the screen says so; q still quits.
    let done = dir.path().join("done-no-token");
    tmux.start("bare", &format!("{bin} top --admin {admin}"), &done);
    tmux.wait("bare", "the token message", |s| s.contains("valid token"));
    tmux.run(&["send-keys", "-t", "bare", "q"]);
    assert_eq!(exit_status(&done), "0");
    daemon.kill();
    assert!(!daemon.logs().contains(TOKEN), "{}", daemon.logs());
}
