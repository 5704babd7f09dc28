//! The admin router: the bearer-token check (every route but `/health` and the dashboard
//! page, which holds no data) and the handlers.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use serde_json::json;

use super::AdminState;

type Shared = Arc<AdminState>;

/// The dashboard: one page, no data in it; it reads `/api/series` and `/api/status`.
const DASHBOARD: &str = include_str!("dashboard.html");

/// Every route; `/health`, `/` and `/dashboard` answer without the token.
pub fn router(state: Shared) -> Router {
    let guarded = Router::new()
        .route("/metrics", get(metrics))
        .route("/ready", get(ready))
        .route("/api/status", get(status))
        .route("/api/config", get(config).put(change))
        .route("/api/series", get(series))
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize));
    Router::new()
        .route("/health", get(health))
        .route("/", get(|| async { Redirect::to("/dashboard") }))
        .route("/dashboard", get(dashboard))
        .merge(guarded)
        .with_state(state)
}

/// Refuses a request without `Authorization: Bearer <token>` when a token is configured. The
/// comparison takes the same time wherever the first difference is; nothing logs the header.
async fn authorize(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let Some(expected) = state.token() else {
        return next.run(request).await;
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(g) if same(g.as_bytes(), expected.as_bytes()) => next.run(request).await,
        _ => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            Json(json!({"error": "a valid bearer token is required"})),
        )
            .into_response(),
    }
}

/// Constant-time equality (for equal lengths; a length mismatch says only that).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "alive"}))
}

async fn ready(State(state): State<Shared>) -> Response {
    let (ready, body) = state.readiness();
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

async fn metrics(State(state): State<Shared>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics(),
    )
        .into_response()
}

async fn status(State(state): State<Shared>) -> Json<serde_json::Value> {
    Json(state.status())
}

async fn config(State(state): State<Shared>) -> Json<serde_json::Value> {
    Json(state.config())
}

/// `PUT /api/config`: a whole pipeline file (TOML, any content type but JSON), or key-value
/// pairs (`Content-Type: application/json`). Answers once the change is applied (200) or
/// refused: 422 invalid, 409 needs a restart, 503 cannot connect or stopping.
async fn change(
    State(state): State<Shared>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    use crate::run::change::Change;
    use crate::run::control::{Answer, Origin, Verdict};
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let controller = state.controller();
    let answer = if json {
        controller.submit_json(&body, Origin::Api).await
    } else {
        match String::from_utf8(body.to_vec()) {
            Ok(text) => controller.submit(Change::Replace(text), Origin::Api).await,
            Err(_) => Answer::refused(Verdict::Invalid, "the pipeline file is not UTF-8"),
        }
    };
    let code = StatusCode::from_u16(answer.verdict.http_status())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, Json(answer.body)).into_response()
}

async fn series(State(state): State<Shared>) -> Response {
    state.with_series(|s| Json(&*s).into_response())
}

async fn dashboard() -> Response {
    (
        [
            (header::CACHE_CONTROL, "no-store"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'",
            ),
        ],
        Html(DASHBOARD),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_compare_equal_only_when_equal() {
        assert!(super::same(b"s3cret", b"s3cret"));
        assert!(!super::same(b"s3cret", b"s3creT"));
        assert!(!super::same(b"s3cret", b"s3cre"));
        assert!(!super::same(b"", b"x"));
    }
}
