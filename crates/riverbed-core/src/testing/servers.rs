//! Extra TLS servers that a test starts on its own port and data directory, and stops and
//! removes when dropped: redis-server with `--tls-port` and a second RabbitMQ node with a TLS
//! listener here, PostgreSQL with `ssl = on` in `postgres_tls`. The shared servers are never
//! touched.

use std::ffi::OsString;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::pki::{Pki, ScratchDir};

/// A server a test started; dropping it stops the server and removes its directory.
#[derive(Debug)]
pub struct TestServer {
    pub(super) name: &'static str,
    pub(super) child: Option<Child>,
    pub(super) stop: Option<Command>,
    pub(super) dir: ScratchDir,
    /// How to start the server again, for [`TestServer::restart`].
    pub(super) respawn: Option<Respawn>,
}

/// A server's program, arguments and port, to start it again.
#[derive(Debug)]
pub(super) struct Respawn {
    program: PathBuf,
    args: Vec<OsString>,
    port: u16,
    log: &'static str,
}

impl TestServer {
    /// The server's scratch directory (data and logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops the server with SIGTERM (as an operator restarting it would), then starts it again
    /// with the same port, configuration and data. Only for servers that can (nats-server).
    pub fn restart(&mut self) {
        let respawn = self
            .respawn
            .take()
            .expect("this server cannot be restarted");
        self.stop_child();
        let mut command = Command::new(&respawn.program);
        command.args(&respawn.args);
        self.child = Some(launch(self.name, &mut command));
        assert!(
            wait_for_port(respawn.port, Duration::from_secs(20)),
            "{} did not listen on {} again:\n{}",
            self.name,
            respawn.port,
            self.log_tail(respawn.log)
        );
        self.respawn = Some(respawn);
    }

    /// Stops the child and every process it forked: SIGTERM, then SIGKILL after 15 s.
    fn stop_child(&mut self) {
        if let Some(mut child) = self.child.take() {
            // The child leads its own process group: stop every process the server forked.
            let group = format!("-{}", child.id());
            signal("-TERM", &group);
            let deadline = Instant::now() + Duration::from_secs(15);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            signal("-KILL", &group);
            let _ = child.wait();
        }
    }

    /// The last lines of the file `log` in the scratch dir, to show why a server did not start.
    pub(super) fn log_tail(&self, log: &str) -> String {
        let text = std::fs::read_to_string(self.dir().join(log)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = &mut self.stop {
            let _ = stop.stdout(Stdio::null()).stderr(Stdio::null()).status();
        }
        self.stop_child();
        tracing::debug!(server = self.name, "Test server stopped");
    }
}

/// Sends `signal` to the process group `group` (`-<pgid>`), quietly: it may be gone already.
fn signal(signal: &str, group: &str) {
    let _ = Command::new("kill")
        .args([signal, "--", group])
        .stderr(Stdio::null())
        .status();
}

/// The path of the server program `program`, or `None` (the test skips, or fails in CI where
/// `RIVERBED_REQUIRE_SERVICES=1`) when it is not installed.
pub fn require_program(program: &str, candidates: Vec<PathBuf>) -> Option<PathBuf> {
    if let Some(found) = candidates.into_iter().find(|p| p.is_file()) {
        return Some(found);
    }
    let required = std::env::var("RIVERBED_REQUIRE_SERVICES").is_ok_and(|v| v == "1");
    assert!(
        !required,
        "{program} is not installed and RIVERBED_REQUIRE_SERVICES=1: this test may not skip"
    );
    eprintln!("skipping: {program} is not installed");
    None
}

/// Whether something listens on `127.0.0.1:port`.
fn port_open(port: u16) -> bool {
    let addr = ([127, 0, 0, 1], port).into();
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// Waits until something listens on `127.0.0.1:port`.
fn wait_for_port(port: u16, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if port_open(port) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// A redis-server of its own answering only TLS on `port`, with the PKI's server certificate;
/// clients must present a certificate signed by the PKI's CA.
pub fn redis_tls(pki: &Pki, port: u16) -> Option<TestServer> {
    let program = require_program(
        "redis-server",
        vec![
            "/usr/bin/redis-server".into(),
            "/usr/local/bin/redis-server".into(),
        ],
    )?;
    let dir = ScratchDir::new("redis-tls");
    let mut command = Command::new(program);
    command
        .args([
            "--port",
            "0",
            "--bind",
            "127.0.0.1",
            "--tls-port",
            &port.to_string(),
        ])
        .arg("--tls-cert-file")
        .arg(&pki.server_cert)
        .arg("--tls-key-file")
        .arg(&pki.server_key)
        .arg("--tls-ca-cert-file")
        .arg(&pki.ca)
        .args([
            "--tls-auth-clients",
            "yes",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(dir.path())
        .arg("--logfile")
        .arg(dir.path().join("redis.log"));
    spawn(
        "redis-tls",
        command,
        dir,
        port,
        "redis.log",
        Duration::from_secs(20),
    )
}

/// A second RabbitMQ node (`riverbed-tls@localhost`) with only a TLS listener on `port`, its
/// own distribution port (`port + 1`; `port + 2` is reserved as its unused plain port) and
/// data in a scratch dir. Clients must present a certificate signed by the PKI's CA; user
/// `guest` / `guest` may connect from 127.0.0.1.
pub fn rabbitmq_tls(pki: &Pki, port: u16) -> Option<TestServer> {
    let program = require_program(
        "rabbitmq-server",
        vec!["/usr/lib/rabbitmq/bin/rabbitmq-server".into()],
    )?;
    let dir = ScratchDir::new("rabbitmq-tls");
    let d = dir.path();
    let conf = format!(
        "listeners.tcp = none\nlisteners.ssl.default = 127.0.0.1:{port}\n\
         ssl_options.certfile = {}\nssl_options.keyfile = {}\nssl_options.cacertfile = {}\n\
         ssl_options.verify = verify_peer\nssl_options.fail_if_no_peer_cert = true\n",
        pki.server_cert.display(),
        pki.server_key.display(),
        pki.ca.display()
    );
    std::fs::write(d.join("rabbitmq.conf"), conf).expect("write rabbitmq.conf");
    std::fs::write(d.join("enabled_plugins"), "[].\n").expect("write enabled_plugins");
    let mut command = Command::new(program);
    command
        .env("HOME", d)
        .env("RABBITMQ_NODENAME", "riverbed-tls@localhost")
        .env("RABBITMQ_NODE_PORT", (port + 2).to_string())
        .env("RABBITMQ_DIST_PORT", (port + 1).to_string())
        .env("RABBITMQ_MNESIA_BASE", d.join("mnesia"))
        .env("RABBITMQ_LOG_BASE", d.join("log"))
        .env("RABBITMQ_CONFIG_FILE", d.join("rabbitmq.conf"))
        .env("RABBITMQ_ENABLED_PLUGINS_FILE", d.join("enabled_plugins"))
        .env("RABBITMQ_PID_FILE", d.join("pid"))
        .env("RABBITMQ_CONF_ENV_FILE", "/dev/null")
        .stdout(std::fs::File::create(d.join("startup.log")).expect("a log file"));
    spawn(
        "rabbitmq-tls",
        command,
        dir,
        port,
        "startup.log",
        Duration::from_secs(60),
    )
}

/// Starts `command` in a process group of its own and waits for `port`.
/// Starts `command` in a process group of its own (so stopping it stops what it forks), with
/// nothing on its standard input.
fn launch(name: &str, command: &mut Command) -> std::process::Child {
    use std::os::unix::process::CommandExt;
    command.process_group(0).stdin(Stdio::null());
    command
        .spawn()
        .unwrap_or_else(|e| panic!("start {name}: {e}"))
}

pub(super) fn spawn(
    name: &'static str,
    mut command: Command,
    dir: ScratchDir,
    port: u16,
    log: &str,
    limit: Duration,
) -> Option<TestServer> {
    assert!(
        !port_open(port),
        "port {port} is taken: a {name} left over from an earlier run?"
    );
    let child = launch(name, &mut command);
    let server = TestServer {
        name,
        child: Some(child),
        stop: None,
        dir,
        respawn: None,
    };
    assert!(
        wait_for_port(port, limit),
        "{name} did not listen on {port} within {limit:?}:\n{}",
        server.log_tail(log)
    );
    Some(server)
}

/// A nats-server of its own on `port` with JetStream (data in a scratch dir) and `config`
/// added to its configuration file, e.g. subject `mappings` (which belong to the server's
/// configuration, so the shared server's cannot be used for them).
pub fn nats_server(port: u16, config: &str) -> Option<TestServer> {
    let program = require_program(
        "nats-server",
        vec![
            "/usr/sbin/nats-server".into(),
            "/usr/bin/nats-server".into(),
            "/usr/local/bin/nats-server".into(),
        ],
    )?;
    let dir = ScratchDir::new("nats-server");
    let file = dir.path().join("nats.conf");
    std::fs::write(
        &file,
        format!(
            "listen: \"127.0.0.1:{port}\"\njetstream {{ store_dir: \"{}\" }}\n{config}\n",
            dir.path().join("js").display()
        ),
    )
    .expect("write nats.conf");
    let args: Vec<OsString> = vec![
        "-c".into(),
        file.into(),
        "-l".into(),
        dir.path().join("nats.log").into(),
    ];
    let mut command = Command::new(&program);
    command.args(&args);
    let mut server = spawn(
        "nats-server",
        command,
        dir,
        port,
        "nats.log",
        Duration::from_secs(20),
    )?;
    server.respawn = Some(Respawn {
        program,
        args,
        port,
        log: "nats.log",
    });
    Some(server)
}
