//! A PostgreSQL cluster of its own for TLS tests: `initdb` into a scratch dir (as user
//! `postgres` when run as root), `ssl = on`, started and stopped with `pg_ctl`.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::pki::{Pki, ScratchDir};
use super::servers::{TestServer, require_program};

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// `program` run as user `postgres` when this process is root (initdb refuses root).
fn as_postgres(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn run(what: &str, command: &mut Command) {
    let out = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A PostgreSQL cluster of its own on `port` (user `postgres`, database `postgres`) that accepts
/// only TLS connections presenting a client certificate signed by the PKI's CA (`hostssl ...
/// clientcert=verify-ca`), with the PKI's server certificate.
pub fn postgres_tls(pki: &Pki, port: u16) -> Option<TestServer> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    let bin = require_program(
        "initdb",
        versions.iter().rev().map(|b| b.join("initdb")).collect(),
    )?
    .parent()
    .expect("a bin dir")
    .to_owned();
    let dir = ScratchDir::new("postgres-tls");
    let data = dir.path().join("data");
    if is_root() {
        run(
            "chown",
            Command::new("chown").arg("postgres:").arg(dir.path()),
        );
    }
    run(
        "initdb",
        as_postgres(&bin.join("initdb")).arg("-D").arg(&data).args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        ]),
    );
    for (from, to) in [
        (&pki.server_cert, "server.crt"),
        (&pki.server_key, "server.key"),
        (&pki.ca, "root.crt"),
    ] {
        std::fs::copy(from, data.join(to)).expect("copy the certificate");
    }
    std::fs::write(
        data.join("pg_hba.conf"),
        "local all all trust\nhostssl all all 127.0.0.1/32 trust clientcert=verify-ca\n",
    )
    .expect("write pg_hba.conf");
    if is_root() {
        run(
            "chown",
            Command::new("chown").arg("-R").arg("postgres:").arg(&data),
        );
    }
    run(
        "chmod",
        Command::new("chmod")
            .arg("600")
            .arg(data.join("server.key")),
    );
    let options = format!(
        "-p {port} -k {} -c listen_addresses=127.0.0.1 -c ssl=on -c ssl_ca_file=root.crt -c fsync=off",
        dir.path().display()
    );
    let mut stop = as_postgres(&bin.join("pg_ctl"));
    stop.arg("-D")
        .arg(&data)
        .args(["-m", "immediate", "-w", "stop"]);
    let server = TestServer {
        name: "postgres-tls",
        child: None,
        stop: Some(stop),
        dir,
        respawn: None,
    };
    let log = server.dir().join("postgres.log");
    let started = as_postgres(&bin.join("pg_ctl"))
        .arg("-D")
        .arg(&data)
        .args(["-w", "-t", "50", "-o", &options, "-l"])
        .arg(&log)
        .arg("start")
        .output()
        .expect("run pg_ctl");
    assert!(
        started.status.success(),
        "the TLS PostgreSQL on {port} did not start:\n{}",
        server.log_tail("postgres.log")
    );
    Some(server)
}
