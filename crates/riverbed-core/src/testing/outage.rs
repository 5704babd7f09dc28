//! Taking a shared service down for a while in a test, and always bringing it back: the guard
//! starts the service again when dropped, also when the test fails and unwinds. A test that
//! uses these holds the service's lock exclusively ([`super::lock_service`]).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Starts its service again when dropped (and waits until it answers).
#[must_use = "the service comes back when this is dropped"]
pub struct ComesBack {
    start: fn(),
}

impl Drop for ComesBack {
    fn drop(&mut self) {
        (self.start)();
    }
}

/// Runs a command quietly; true when it exited successfully.
fn quiet(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Waits up to `limit` for `cond`, polling every 50 ms.
fn until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !cond() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

fn postgres_version() -> String {
    std::fs::read_dir("/etc/postgresql")
        .ok()
        .and_then(|d| d.filter_map(Result::ok).next())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .expect("a PostgreSQL cluster under /etc/postgresql")
}

fn postgres_answers() -> bool {
    quiet("pg_isready", &["-h", "127.0.0.1", "-p", "5432"])
}

fn start_postgres() {
    let version = postgres_version();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !postgres_answers() {
        assert!(Instant::now() < deadline, "PostgreSQL did not start");
        quiet(
            "pg_ctlcluster",
            &["--skip-systemctl-redirect", &version, "main", "start"],
        );
        until(Duration::from_secs(5), postgres_answers);
    }
}

/// Stops the shared PostgreSQL on 5432 (fast shutdown: sessions are ended, as in a crash of
/// the connection); it starts again when the guard drops.
pub fn stop_postgres() -> ComesBack {
    let guard = ComesBack {
        start: start_postgres,
    };
    let version = postgres_version();
    quiet(
        "pg_ctlcluster",
        &[
            "--skip-systemctl-redirect",
            &version,
            "main",
            "stop",
            "-m",
            "fast",
        ],
    );
    assert!(
        until(Duration::from_secs(30), || !postgres_answers()),
        "PostgreSQL did not stop"
    );
    guard
}

fn redis_answers() -> bool {
    Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", "6379", "ping"])
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "PONG")
}

const REDIS_DIR: &str = "/var/lib/redis";

/// Starts the shared Redis on 6379 if it does not answer, and waits until it does.
pub fn ensure_redis_up() {
    let _ = std::fs::create_dir_all(REDIS_DIR);
    let _ = std::fs::create_dir_all("/var/log/redis");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !redis_answers() {
        assert!(Instant::now() < deadline, "Redis did not start");
        quiet(
            "redis-server",
            &[
                "--daemonize",
                "yes",
                "--bind",
                "127.0.0.1",
                "-::1",
                "--port",
                "6379",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                REDIS_DIR,
                "--logfile",
                "/var/log/redis/ci.log",
            ],
        );
        until(Duration::from_secs(5), redis_answers);
    }
    // A snapshot written by `stop_redis_keeping_data` is loaded once, then removed: a later
    // restart must not bring old keys back.
    let _ = std::fs::remove_file(Path::new(REDIS_DIR).join("dump.rdb"));
}

/// Stops the shared Redis on 6379 after saving its data to disk; it starts again (loading
/// the data, as a restarted persistent Redis does) when the guard drops.
pub fn stop_redis_keeping_data() -> ComesBack {
    let guard = ComesBack {
        start: ensure_redis_up,
    };
    quiet(
        "redis-cli",
        &[
            "-h",
            "127.0.0.1",
            "-p",
            "6379",
            "config",
            "set",
            "dir",
            REDIS_DIR,
        ],
    );
    quiet(
        "redis-cli",
        &["-h", "127.0.0.1", "-p", "6379", "shutdown", "save"],
    );
    assert!(
        until(Duration::from_secs(30), || !redis_answers()),
        "Redis did not stop"
    );
    guard
}

/// Stops the shared Redis on 6379 without saving (every key is lost, as in a crash of a Redis
/// without persistence) and starts it again at once. The guard makes sure it is up at the end.
pub fn restart_redis_losing_data() -> ComesBack {
    let guard = ComesBack {
        start: ensure_redis_up,
    };
    quiet(
        "redis-cli",
        &["-h", "127.0.0.1", "-p", "6379", "shutdown", "nosave"],
    );
    assert!(
        until(Duration::from_secs(20), || !redis_answers()),
        "Redis did not stop"
    );
    ensure_redis_up();
    guard
}
