//! The log subscriber: a filter from `--log` / `RIVERBED_LOG`, else `RUST_LOG`, else the
//! command's default; an invalid filter is an error, never a silent fallback.

use std::io::IsTerminal;

use anyhow::{Context, Result};
use tracing_subscriber::EnvFilter;

/// Where the filter came from, for the error that names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Riverbed,
    RustLog,
    Default,
}

/// Picks the filter text: `RIVERBED_LOG` (or `--log`) wins over `RUST_LOG`; empty means unset.
fn choose<'a>(
    riverbed: Option<&'a str>,
    rust_log: Option<&'a str>,
    default: &'a str,
) -> (&'a str, Origin) {
    let set = |v: Option<&'a str>| v.filter(|s| !s.trim().is_empty());
    match (set(riverbed), set(rust_log)) {
        (Some(f), _) => (f, Origin::Riverbed),
        (None, Some(f)) => (f, Origin::RustLog),
        (None, None) => (default, Origin::Default),
    }
}

/// The filter for `riverbed` (from `--log` or `RIVERBED_LOG`), `rust_log` and `default`.
fn filter(riverbed: Option<&str>, rust_log: Option<&str>, default: &str) -> Result<EnvFilter> {
    let (text, origin) = choose(riverbed, rust_log, default);
    let name = match origin {
        Origin::Riverbed => "--log / RIVERBED_LOG",
        Origin::RustLog => "RUST_LOG",
        Origin::Default => "the default",
    };
    EnvFilter::builder().parse(text).with_context(|| {
        format!("invalid log filter `{text}` in {name} (e.g. `info` or `riverbed_core=debug,info`)")
    })
}

/// Installs the subscriber on stderr, as text or JSON lines; colours only on a terminal.
pub fn init(riverbed: Option<&str>, json: bool, default: &str) -> Result<()> {
    let rust_log = std::env::var("RUST_LOG").ok();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter(riverbed, rust_log.as_deref(), default)?)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn riverbed_log_wins_then_rust_log_then_the_default() {
        assert_eq!(
            choose(Some("warn"), Some("debug"), "info"),
            ("warn", Origin::Riverbed)
        );
        assert_eq!(
            choose(None, Some("debug"), "info"),
            ("debug", Origin::RustLog)
        );
        assert_eq!(
            choose(Some(""), Some("debug"), "info"),
            ("debug", Origin::RustLog)
        );
        assert_eq!(choose(None, Some(" "), "info"), ("info", Origin::Default));
    }

    #[test]
    fn an_invalid_filter_is_an_error_naming_its_origin() {
        let e = filter(None, Some("riverbed=loud"), "info").unwrap_err();
        assert!(format!("{e:#}").contains("RUST_LOG"), "{e:#}");
        assert!(filter(Some("riverbed_core=debug,info"), None, "info").is_ok());
    }
}
