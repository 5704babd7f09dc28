//! `riverbed`: run declarative pipelines from brokers into databases, with end-to-end acks.
//!
//! # Layout
//! - `admin`: the admin HTTP server (metrics, health, readiness, status, redacted config,
//!   the history and the live dashboard).
//! - `config`: pipeline files: loading with line-precise errors, checking, building.
//! - `declare`: `riverbed declare`, the RabbitMQ and NATS topology of pipeline files, ahead of
//!   time.
//! - `demo`: `riverbed demo`, the embedded default end to end.
//! - `dlq`: listing, showing, redriving and purging dead letters (RabbitMQ and embedded).
//! - `feed`: producer tracking for sports-style feeds (alives, recovery, snapshots).
//! - `held`: the partition leases a process holds, and handing one back.
//! - `leader`: singleton mode's lease: standby, takeover, leaving when it is lost.
//! - `logs`: the log filter (`RIVERBED_LOG`, then `RUST_LOG`) and subscriber.
//! - `progress`: the live progress line.
//! - `run`: `riverbed run`, and swapping in a changed configuration while it runs.
//! - `signals`: SIGINT / SIGTERM handling.
//! - `top`: `riverbed top`, a terminal view of a running daemon's admin API.

#![forbid(unsafe_code)]

/// jemalloc: the runtime allocates small objects on several threads; with glibc's allocator
/// the runtime benchmark ran at a quarter of the speed (contention and consolidation), and
/// mimalloc, as fast, held five times the resident memory (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

mod admin;
mod config;
mod declare;
mod demo;
mod dlq;
mod feed;
mod held;
mod leader;
mod logs;
mod progress;
mod publish;
mod run;
mod signals;
mod top;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};

/// Moves events from brokers into databases and services without losing, duplicating or
/// reordering what matters.
#[derive(Debug, Parser)]
#[command(name = "riverbed", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log filter (tracing syntax, e.g. `info` or `riverbed_core=debug`). Without it (or
    /// `RIVERBED_LOG`), `RUST_LOG` is used; when both are set, `RIVERBED_LOG` wins. Default
    /// `info` (`error` for the demo). An invalid filter stops the command with an error.
    #[arg(long, global = true, env = "RIVERBED_LOG")]
    log: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the pipeline described by a TOML file until stopped (SIGINT/SIGTERM) or its source ends.
    /// A changed configuration is swapped in without losing or repeating a message: on SIGHUP
    /// (the file read again), `PUT /api/config` on the admin server, or a command on the
    /// `[control]` queue. The running pipeline drains first; a change that fails to validate
    /// or to connect is refused and the running pipeline goes on.
    Run {
        /// The pipeline file.
        config: PathBuf,
        /// No progress line, even on a terminal.
        #[arg(long)]
        quiet: bool,
    },
    /// Check a pipeline file without connecting to anything.
    Validate {
        /// The pipeline file.
        config: PathBuf,
    },
    /// Declare the RabbitMQ queues, bindings and exchanges (and the NATS JetStream streams) of
    /// pipeline files without running them, so messages published before a service first runs
    /// wait for it.
    Declare {
        /// The pipeline files (all are checked before anything is declared).
        #[arg(required = true)]
        configs: Vec<PathBuf>,
    },
    /// Run a demo on the embedded default: no broker, no database server.
    Demo(demo::DemoArgs),
    /// List, show, redrive and purge dead letters: a pipeline's RabbitMQ dead-letter queue or
    /// embedded dead-letter table (give the pipeline file), or an embedded log's (give the log).
    Dlq {
        #[command(subcommand)]
        command: dlq::DlqCommand,
    },
    /// Publish JSON lines, with confirms, into what a pipeline consumes, routed by key as it
    /// partitions (the consistent-hash exchange of a `partitioned` pipeline).
    Publish(publish::PublishArgs),
    /// Watch a running daemon in the terminal: rates, latency, sinks, dead letters, from its
    /// admin server (`[admin]`), refreshed every second; `q` quits.
    Top(top::TopArgs),
}

fn init_logs(cli: &Cli) -> Result<()> {
    let default = if matches!(cli.command, Command::Demo(_)) {
        "error"
    } else {
        "info"
    };
    logs::init(
        cli.log.as_deref(),
        matches!(cli.log_format, LogFormat::Json),
        default,
    )
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = init_logs(&cli) {
        eprintln!("riverbed: {e:#}");
        return ExitCode::from(2);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("starting the runtime");
    match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("riverbed: {}", error_chain(&e));
            ExitCode::from(1)
        }
    }
}

/// The error and its causes, joined by `: `, leaving out a cause whose text the previous one
/// already quotes (library errors often say `database error: {source}` and also report the
/// source as their cause: `{:#}` would print it twice, nested errors thrice and more).
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    let mut last = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !last.is_empty() && last.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
        last = text;
    }
    out
}

async fn dispatch(command: Command) -> Result<ExitCode> {
    match command {
        Command::Run { config, quiet } => run::run(config, quiet).await,
        Command::Validate { config } => {
            let plan = config::load(&config)?;
            println!(
                "{}: ok ({} processors, {} sinks, {} partitions)",
                config.display(),
                plan.processors.len(),
                plan.sinks.len(),
                plan.partitions
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Declare { configs } => declare::run(&configs).await.map(|_| ExitCode::SUCCESS),
        Command::Demo(args) => demo::run(args).await.map(|_| ExitCode::SUCCESS),
        Command::Dlq { command } => dlq::run(command).await.map(|_| ExitCode::SUCCESS),
        Command::Publish(args) => publish::run(args).await.map(|_| ExitCode::SUCCESS),
        Command::Top(args) => top::run(args).await.map(|_| ExitCode::SUCCESS),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_consistent() {
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }

    #[test]
    fn a_cause_quoted_by_its_error_is_printed_once() {
        let sql = sqlx::Error::Protocol("relation \"t\" does not exist".into());
        let e = anyhow::Error::new(riverbed_sql::Error::Database(sql))
            .context("reconciling `t` at start");
        assert_eq!(
            super::error_chain(&e),
            "reconciling `t` at start: database error: encountered unexpected or invalid data: \
             relation \"t\" does not exist"
        );
        let plain = anyhow::anyhow!("refused").context("connecting");
        assert_eq!(super::error_chain(&plain), "connecting: refused");
    }
}
