//! A RabbitMQ cluster of its own for a test: `n` nodes `riverbed-cluster-<i>@localhost` on
//! ports of their own, one scratch directory (with the shared Erlang cookie), joined into one
//! cluster, with the consistent-hash exchange plugin. Dropping it stops every node and removes
//! the directory; the shared broker on 5672 is never touched.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::pki::ScratchDir;
use super::servers::{TestServer, require_program, spawn};

/// The Erlang cookie the nodes and the CLI share.
const COOKIE: &str = "RIVERBEDCLUSTERTESTCOOKIE";

/// A running cluster: AMQP on `base_port + i`, distribution on `base_port + 100 + i`.
pub struct RabbitCluster {
    name: String,
    base_port: u16,
    nodes: Vec<Option<TestServer>>,
    // Last: removed after every node stopped.
    dir: ScratchDir,
}

impl RabbitCluster {
    /// Node `i`'s name.
    pub fn node(&self, i: usize) -> String {
        format!("{}-{i}@localhost", self.name)
    }

    /// Node `i`'s AMQP URL (guest, from loopback).
    pub fn url(&self, i: usize) -> String {
        format!(
            "amqp://guest:guest@127.0.0.1:{}/%2f",
            self.base_port + i as u16
        )
    }

    /// Every node's URL.
    pub fn urls(&self) -> Vec<String> {
        (0..self.nodes.len()).map(|i| self.url(i)).collect()
    }

    /// Runs `rabbitmqctl -n <node i> args...`; its standard output, or a panic with its error.
    pub fn ctl(&self, i: usize, args: &[&str]) -> String {
        ctl(self.dir.path(), &self.node(i), args)
    }

    /// The index of the node that hosts the leader of quorum queue `queue`, asking node `ask`.
    pub fn leader_of(&self, queue: &str, ask: usize) -> Option<usize> {
        let out = self.ctl(
            ask,
            &[
                "list_queues",
                "name",
                "leader",
                "--quiet",
                "--no-table-headers",
            ],
        );
        let leader = out.lines().find_map(|l| {
            let mut f = l.split_whitespace();
            (f.next() == Some(queue))
                .then(|| f.next().map(str::to_owned))
                .flatten()
        })?;
        (0..self.nodes.len()).find(|&i| self.node(i) == leader)
    }

    /// Stops node `i` for good (the whole node, as a machine going away would).
    pub fn stop_node(&mut self, i: usize) {
        self.nodes[i] = None;
    }
}

fn ctl(home: &Path, node: &str, args: &[&str]) -> String {
    // The tool itself, not the wrapper on PATH that switches to the rabbitmq user (and its
    // cookie); the cookie is given explicitly too.
    let out = Command::new("/usr/lib/rabbitmq/bin/rabbitmqctl")
        .env("HOME", home)
        .env("RABBITMQ_CONF_ENV_FILE", "/dev/null")
        .args(["--erlang-cookie", COOKIE, "-n", node])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running rabbitmqctl");
    assert!(
        out.status.success(),
        "rabbitmqctl -n {node} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Starts `n` nodes and joins nodes 1.. to node 0. `None` when RabbitMQ is not installed (the
/// test skips, or fails under `RIVERBED_REQUIRE_SERVICES=1`).
pub fn rabbitmq_cluster(base_port: u16, n: usize) -> Option<RabbitCluster> {
    rabbitmq_cluster_named("riverbed-cluster", base_port, n)
}

/// [`rabbitmq_cluster`] with nodes named `<name>-<i>@localhost`, so that tests running at the
/// same time do not start nodes of the same name.
pub fn rabbitmq_cluster_named(name: &str, base_port: u16, n: usize) -> Option<RabbitCluster> {
    let program = require_program(
        "rabbitmq-server",
        vec!["/usr/lib/rabbitmq/bin/rabbitmq-server".into()],
    )?;
    let dir = ScratchDir::new("rabbitmq-cluster");
    // One HOME for every node and for rabbitmqctl: they share its Erlang cookie.
    std::fs::write(
        dir.path().join(".erlang.cookie"),
        "RIVERBEDCLUSTERTESTCOOKIE",
    )
    .expect("write the cookie");
    set_owner_only(&dir.path().join(".erlang.cookie"));
    let mut cluster = RabbitCluster {
        name: name.to_owned(),
        base_port,
        nodes: Vec::new(),
        dir,
    };
    for i in 0..n {
        let node_dir = ScratchDir::new(&format!("rabbitmq-cluster-node{i}"));
        let d = node_dir.path();
        let port = base_port + i as u16;
        std::fs::write(
            d.join("rabbitmq.conf"),
            format!("listeners.tcp.default = 127.0.0.1:{port}\nloopback_users = none\n"),
        )
        .expect("write rabbitmq.conf");
        std::fs::write(
            d.join("enabled_plugins"),
            "[rabbitmq_consistent_hash_exchange].\n",
        )
        .expect("write enabled_plugins");
        let mut command = Command::new(&program);
        command
            .env("HOME", cluster.dir.path())
            .env("RABBITMQ_NODENAME", cluster.node(i))
            .env("RABBITMQ_NODE_PORT", port.to_string())
            .env(
                "RABBITMQ_DIST_PORT",
                (base_port + 100 + i as u16).to_string(),
            )
            .env("RABBITMQ_MNESIA_BASE", d.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", d.join("log"))
            .env("RABBITMQ_CONFIG_FILE", d.join("rabbitmq.conf"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d.join("enabled_plugins"))
            .env("RABBITMQ_PID_FILE", d.join("pid"))
            .env("RABBITMQ_CONF_ENV_FILE", "/dev/null")
            .stdout(std::fs::File::create(d.join("startup.log")).expect("a log file"));
        let server = spawn(
            "rabbitmq-cluster-node",
            command,
            node_dir,
            port,
            "startup.log",
            Duration::from_secs(90),
        )?;
        cluster.nodes.push(Some(server));
    }
    for i in 1..n {
        cluster.ctl(i, &["stop_app"]);
        cluster.ctl(i, &["join_cluster", &cluster.node(0)]);
        cluster.ctl(i, &["start_app"]);
        cluster.ctl(i, &["await_startup", "--timeout", "60"]);
    }
    Some(cluster)
}

fn set_owner_only(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o400));
}
