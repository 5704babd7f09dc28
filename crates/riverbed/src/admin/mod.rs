//! The admin HTTP server: `/metrics`, `/health`, `/ready`, `/api/status`, `/api/config`
//! (`GET` redacted, `PUT` a change swapped in), `/api/series` and the `/dashboard` page, bound
//! to loopback by default and guarded by an optional bearer token.
//!
//! # Layout
//! - `backlog`: the source's consumer lag and connection state, sampled while it runs.
//! - `recorder`: the Prometheus recorder with every metric described and real histograms,
//!   fanned out with `capture`, which keeps what the dashboard's sampler reads.
//! - `series`: the history: samples (rates, percentiles) in a bounded ring; `sampler` fills it.
//! - `state`: what the routes report: the plan's outline, the live pipeline, the leader role.
//! - `routes`: the router, the token check and the handlers; `dashboard.html` is the page.

mod backlog;
mod capture;
mod recorder;
mod routes;
mod sampler;
mod series;
mod state;

use std::sync::Arc;

use anyhow::{Context, Result};

pub use state::{AdminState, Role};

use crate::config::{AdminPlan, Plan};

/// Starts the admin server for `plan` (whose file's text is `text`) if `[admin]` asks for one:
/// installs the metrics recorder, binds the listener (an address in use is an error at start)
/// and serves until the process ends. `None` without `[admin]`.
pub async fn start(
    plan: &Plan,
    path: &std::path::Path,
    text: &str,
    controller: crate::run::control::Controller,
) -> Result<Option<AdminState>> {
    let Some(admin) = &plan.admin else {
        return Ok(None);
    };
    let token = admin.token.as_ref().map(|t| t.read()).transpose()?;
    let config = crate::config::redacted(text, &|name| std::env::var(name).ok())?;
    let recorders = recorder::install()?;
    let state = AdminState::new(
        plan,
        path,
        config,
        token,
        recorders,
        sampler::series(),
        controller,
    );
    serve(admin, state.clone()).await?;
    tokio::spawn(sampler::run(state.clone()));
    Ok(Some(state))
}

async fn serve(admin: &AdminPlan, state: AdminState) -> Result<()> {
    let addr = admin.listen;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("admin server: cannot listen on {addr}"))?;
    let guarded = admin.token.is_some();
    if !addr.ip().is_loopback() && !guarded {
        tracing::warn!(%addr, "Admin server listens beyond loopback without a token");
    }
    tracing::info!(%addr, token = guarded, "Admin server listening");
    let app = routes::router(Arc::new(state));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "Admin server stopped");
        }
    });
    Ok(())
}
