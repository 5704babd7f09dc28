//! `riverbed top`: a terminal view of a running daemon's admin API (`/api/status` and
//! `/api/series`), refreshed every second; `q` (or Esc, Ctrl-C) quits.
//!
//! # Layout
//! - `mod.rs`: the arguments, the admin client and the refresh loop.
//! - `view`: what one screen shows, drawn with ratatui from the two answers.

mod view;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use reqwest::{StatusCode, Url};
use serde_json::Value;

/// How often the view refreshes.
const REFRESH: Duration = Duration::from_secs(1);

/// `riverbed top`'s arguments.
#[derive(Debug, clap::Args)]
pub struct TopArgs {
    /// The daemon's admin server.
    #[arg(long, default_value = "http://127.0.0.1:9600")]
    admin: Url,
    /// A file holding the admin token (`[admin] token_file`), when the server has one.
    #[arg(long)]
    token_file: Option<PathBuf>,
}

/// What the last refresh got: both answers, or why not.
pub(crate) type Fetched = Result<(Value, Value), String>;

/// Runs the view until a quit key.
pub async fn run(args: TopArgs) -> Result<()> {
    let token = match &args.token_file {
        Some(f) => Some(read_token(f)?),
        None => None,
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .context("building the HTTP client")?;
    let admin = Admin {
        client,
        base: args.admin,
        token,
    };
    let mut terminal = ratatui::try_init().context("opening the terminal")?;
    let outcome = refresh_loop(&mut terminal, &admin).await;
    ratatui::try_restore().context("restoring the terminal")?;
    outcome
}

async fn refresh_loop(terminal: &mut ratatui::DefaultTerminal, admin: &Admin) -> Result<()> {
    loop {
        let fetched = admin.fetch().await;
        terminal
            .draw(|frame| view::draw(frame, admin.base.as_str(), &fetched))
            .context("drawing")?;
        let quit = tokio::task::spawn_blocking(|| quit_within(REFRESH))
            .await
            .context("reading keys")??;
        if quit {
            return Ok(());
        }
    }
}

/// Waits up to `limit` for a quit key; true when one came.
fn quit_within(limit: Duration) -> Result<bool> {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || !event::poll(left)? {
            return Ok(false);
        }
        if let Event::Key(k) = event::read()? {
            let ctrl_c =
                k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL);
            let quits = matches!(k.code, KeyCode::Char('q') | KeyCode::Esc) || ctrl_c;
            if k.kind == KeyEventKind::Press && quits {
                return Ok(true);
            }
        }
    }
}

/// The token in `path`, trimmed; an empty or unreadable file is an error that does not quote it.
fn read_token(path: &std::path::Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--token-file {}: cannot read it", path.display()))?;
    let token = text.trim();
    if token.is_empty() {
        bail!("--token-file {}: the file is empty", path.display());
    }
    Ok(token.to_owned())
}

struct Admin {
    client: reqwest::Client,
    base: Url,
    token: Option<String>,
}

impl Admin {
    async fn fetch(&self) -> Fetched {
        let (status, series) = tokio::join!(self.get("/api/status"), self.get("/api/series"));
        Ok((status?, series?))
    }

    async fn get(&self, path: &str) -> Result<Value, String> {
        let url = self.base.join(path).map_err(|e| format!("{path}: {e}"))?;
        let mut request = self.client.get(url);
        if let Some(t) = &self.token {
            request = request.bearer_auth(t);
        }
        let answer = request
            .send()
            .await
            .map_err(|e| format!("cannot reach the admin server: {}", e.without_url()))?;
        match answer.status() {
            StatusCode::OK => {}
            StatusCode::UNAUTHORIZED => {
                return Err("the admin server wants a valid token (--token-file)".to_owned());
            }
            other => return Err(format!("{path}: HTTP {other}")),
        }
        let body = answer.text().await.map_err(|e| format!("{path}: {e}"))?;
        serde_json::from_str(&body).map_err(|e| format!("{path}: not JSON: {e}"))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_empty_token_file_is_refused_without_quoting_anything() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, " \n").unwrap();
        let e = super::read_token(&file).unwrap_err().to_string();
        assert!(e.contains("is empty"), "{e}");
        std::fs::write(&file, "s3cret\n").unwrap();
        assert_eq!(super::read_token(&file).unwrap(), "s3cret");
        let missing = super::read_token(&dir.path().join("none")).unwrap_err();
        assert!(missing.to_string().contains("cannot read it"), "{missing}");
    }
}
