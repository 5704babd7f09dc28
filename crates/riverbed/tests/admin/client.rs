//! A minimal HTTP/1.0 client for the admin server, and the daemon as a child process with its
//! own environment (the admin token comes from a variable only the child has).

// Shared by several test binaries; each uses a part of it.
#![allow(dead_code)]

use std::io::{BufRead, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// An answer: status code and body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

impl Answer {
    /// The body as JSON (panics with the body when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// `GET path` on 127.0.0.1:`port`, with `Authorization: Bearer token` when given; `None` while
/// nothing listens.
pub fn get(port: u16, path: &str, token: Option<&str>) -> Option<Answer> {
    request(port, "GET", path, token, None, Duration::from_secs(10))
}

/// `PUT path` with `body` of `content_type`; waits up to `limit` for the answer.
pub fn put(
    port: u16,
    path: &str,
    token: Option<&str>,
    content_type: &str,
    body: &str,
    limit: Duration,
) -> Option<Answer> {
    request(port, "PUT", path, token, Some((content_type, body)), limit)
}

fn request(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<(&str, &str)>,
    limit: Duration,
) -> Option<Answer> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(limit)).ok()?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let content = body.map_or(String::new(), |(ty, b)| {
        format!("Content-Type: {ty}\r\nContent-Length: {}\r\n", b.len())
    });
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: localhost\r\n{auth}{content}\r\n{}",
        body.map_or("", |(_, b)| b)
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some(Answer {
        status,
        body: body.to_owned(),
    })
}

/// Polls `GET path` until `accept` takes the answer; panics after `limit` with the last one.
pub fn wait_for(
    port: u16,
    path: &str,
    token: Option<&str>,
    limit: Duration,
    accept: impl Fn(&Answer) -> bool,
) -> Answer {
    let deadline = Instant::now() + limit;
    loop {
        let answer = get(port, path, token);
        if let Some(a) = answer.as_ref().filter(|a| accept(a)) {
            return Answer {
                status: a.status,
                body: a.body.clone(),
            };
        }
        assert!(
            Instant::now() < deadline,
            "waited {limit:?} on {path}; last answer: {answer:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The value of the first sample line of Prometheus text `metrics` that starts with `series`
/// (a name, or a name with its labels).
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A name no other run uses: `riverbed_<test>_<what>_<pid>_<nanos>` (queues, streams, leases).
pub fn unique(test: &str, what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("riverbed_{test}_{what}_{}_{nanos}", std::process::id())
}

/// A free port on 127.0.0.1 (nothing listens on it once this returns).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `riverbed run config` with `env` added, its stderr collected; killed when dropped.
pub struct Daemon {
    child: Child,
    logs: Arc<Mutex<String>>,
}

impl Daemon {
    /// Starts the daemon with info logs.
    pub fn spawn(config: &Path, env: &[(&str, &str)]) -> Daemon {
        let mut child = Command::new(env!("CARGO_BIN_EXE_riverbed"))
            .args(["run", "--quiet"])
            .arg(config)
            .env("RIVERBED_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting riverbed");
        let logs = Arc::new(Mutex::new(String::new()));
        let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        Daemon { child, logs }
    }

    /// Its process id (to send it signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything it logged so far.
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// Kills it and waits for it to end.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}
