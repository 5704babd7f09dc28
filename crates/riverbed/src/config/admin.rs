//! `[admin]`: where the admin HTTP server listens and where its bearer token comes from.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::check::Checker;
use super::load::ConfigError;

/// The port the admin server listens on when `listen` is not set.
pub const DEFAULT_PORT: u16 = 9600;

/// `[admin]`: the admin HTTP server (`/metrics`, `/health`, `/ready`, `/api/status`,
/// `/api/config`). Absent: no admin server.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    /// Where the admin server listens: an address such as "127.0.0.1:9600", or a port alone
    /// ("9600") for that port on 127.0.0.1. Default "127.0.0.1:9600". Keep it on loopback
    /// unless the token and a proxy guard it.
    pub listen: Option<Spanned<String>>,
    /// A file holding the bearer token every route but `/health` requires (trailing white
    /// space cut), such as a Docker or Kubernetes secret.
    pub token_file: Option<Spanned<PathBuf>>,
    /// The environment variable holding the bearer token (instead of `token_file`).
    pub token_env: Option<Spanned<String>>,
    /// Removed: the admin server serves `/metrics` on `listen`.
    pub metrics: Option<Spanned<toml::Value>>,
}

/// Where the bearer token is read from when the daemon starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// A file's text, trailing white space cut.
    File(PathBuf),
    /// An environment variable.
    Env(String),
}

/// The checked `[admin]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminPlan {
    /// Where the server listens.
    pub listen: SocketAddr,
    /// The token, if the routes are guarded.
    pub token: Option<TokenSource>,
}

/// Checks `[admin]`; `None` when the section is absent.
pub(super) fn check_admin(
    c: &Checker<'_>,
    section: Option<&Spanned<AdminSection>>,
) -> Result<Option<AdminPlan>, ConfigError> {
    let Some(section) = section else {
        return Ok(None);
    };
    let admin = section.get_ref();
    if let Some(old) = &admin.metrics {
        return c.err(
            old.span(),
            "`admin.metrics` was replaced by `admin.listen`: the admin server serves /metrics \
             there, with /health, /ready and /api (write `listen = \"127.0.0.1:9464\"`)",
        );
    }
    let listen = match &admin.listen {
        None => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), DEFAULT_PORT),
        Some(l) => parse_listen(l.get_ref()).map_or_else(|m| c.err(l.span(), m), Ok)?,
    };
    let token = match (&admin.token_file, &admin.token_env) {
        (Some(_), Some(e)) => {
            return c.err(
                e.span(),
                "`admin.token_file` and `admin.token_env` are both set: keep one",
            );
        }
        (Some(f), None) => Some(TokenSource::File(f.get_ref().clone())),
        (None, Some(e)) if e.get_ref().is_empty() => {
            return c.err(
                e.span(),
                "`admin.token_env` must name an environment variable",
            );
        }
        (None, Some(e)) => Some(TokenSource::Env(e.get_ref().clone())),
        (None, None) => None,
    };
    Ok(Some(AdminPlan { listen, token }))
}

/// `"127.0.0.1:9600"`, `"[::1]:9600"` or a port alone (on 127.0.0.1). The error does not quote
/// the value (it may have come from the environment).
fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    s.parse().map_err(|_| {
        "`admin.listen` must be an address with a port, such as \"127.0.0.1:9600\", or a port"
            .to_owned()
    })
}

impl TokenSource {
    /// Reads the token. The error names the file or variable, never the value.
    pub fn read(&self) -> anyhow::Result<String> {
        let token = match self {
            TokenSource::File(p) => std::fs::read_to_string(p)
                .map_err(|e| {
                    anyhow::anyhow!("`admin.token_file`: cannot read {}: {e}", p.display())
                })?
                .trim_end()
                .to_owned(),
            TokenSource::Env(name) => std::env::var(name).map_err(|_| {
                anyhow::anyhow!("`admin.token_env`: environment variable `{name}` is not set")
            })?,
        };
        if token.trim().is_empty() {
            anyhow::bail!("the admin token is empty (`admin.token_file` / `admin.token_env`)");
        }
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::{AdminPlan, TokenSource};
    use crate::config::load_str;

    const BASE: &str = "[source]\nkind = \"generate\"\ndata = \"sensors\"\n\n[[sinks]]\nname = \"out\"\nkind = \"noop\"\n";

    fn admin(section: &str) -> Result<Option<AdminPlan>, String> {
        load_str(&format!("{BASE}\n{section}"))
            .map(|p| p.admin)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_admin_server_listens_on_loopback_by_default() {
        assert_eq!(admin("").unwrap(), None);
        let plan = admin("[admin]\n").unwrap().unwrap();
        assert_eq!(plan.listen.to_string(), "127.0.0.1:9600");
        assert_eq!(plan.token, None);
        let plan = admin("[admin]\nlisten = \"9700\"\ntoken_env = \"T\"\n")
            .unwrap()
            .unwrap();
        assert_eq!(plan.listen.to_string(), "127.0.0.1:9700");
        assert_eq!(plan.token, Some(TokenSource::Env("T".into())));
        let plan = admin("[admin]\nlisten = \"0.0.0.0:80\"\ntoken_file = \"/run/t\"\n")
            .unwrap()
            .unwrap();
        assert_eq!(plan.listen.to_string(), "0.0.0.0:80");
        assert_eq!(plan.token, Some(TokenSource::File("/run/t".into())));
    }

    #[test]
    fn the_old_metrics_setting_and_bad_values_are_refused_naming_the_field() {
        let e = admin("[admin]\nmetrics = \"127.0.0.1:9464\"\n").unwrap_err();
        assert!(
            e.starts_with("line 10, column 11: `admin.metrics` was replaced by `admin.listen`"),
            "{e}"
        );
        let e = admin("[admin]\nlisten = \"localhost\"\n").unwrap_err();
        assert!(
            e.starts_with("line 10, column 10: `admin.listen` must be an address"),
            "{e}"
        );
        let e = admin("[admin]\ntoken_file = \"/t\"\ntoken_env = \"T\"\n").unwrap_err();
        assert!(
            e.contains("`admin.token_file` and `admin.token_env` are both set"),
            "{e}"
        );
        let e = admin("[admin]\ntoken_env = \"\"\n").unwrap_err();
        assert!(
            e.contains("`admin.token_env` must name an environment variable"),
            "{e}"
        );
    }

    #[test]
    fn tokens_are_read_and_an_empty_or_missing_one_is_refused_without_quoting_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "s3cret-t0ken\n").unwrap();
        assert_eq!(
            TokenSource::File(file.clone()).read().unwrap(),
            "s3cret-t0ken"
        );
        std::fs::write(&file, " \n").unwrap();
        let e = TokenSource::File(file).read().unwrap_err().to_string();
        assert!(e.contains("empty"), "{e}");
        let missing = TokenSource::File(dir.path().join("none"))
            .read()
            .unwrap_err();
        assert!(missing.to_string().contains("cannot read"), "{missing}");
        let e = TokenSource::Env("RIVERBED_NO_SUCH_TOKEN_VAR".into())
            .read()
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("`RIVERBED_NO_SUCH_TOKEN_VAR` is not set"),
            "{e}"
        );
    }
}
