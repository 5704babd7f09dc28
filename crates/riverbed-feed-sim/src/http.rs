//! The simulator's HTTP endpoints: recovery requests (as the real feed's API takes them), alive
//! control for tests and demos, and a summary of what was published.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::feed::{AliveMode, Feed, RecoveryRequest};
use crate::publish::{Publisher, replay};

#[derive(Clone)]
pub(crate) struct AppState {
    pub feed: Arc<Feed>,
    pub publisher: Arc<Publisher>,
}

/// The routes:
/// - `POST /v1/{producer}/recovery?after=<ms>&request_id=<id>`: replay from `after` (all
///   without it), then `snapshot_complete` with `request_id`. Answers 202 at once.
/// - `POST /control/{producer}/alives?mode=normal|silent|unsubscribed&duration=5s`.
/// - `GET /published`: odds changes sent and each market's last sequence, per producer.
pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/{producer}/recovery", post(recovery))
        .route("/control/{producer}/alives", post(control))
        .route("/published", get(published))
        .with_state(state)
}

#[derive(Debug, Deserialize)]
struct RecoveryQuery {
    after: Option<u64>,
    request_id: u64,
}

type Answer = (StatusCode, Json<Value>);

fn answer(status: StatusCode, body: Value) -> Answer {
    (status, Json(body))
}

async fn recovery(
    State(s): State<AppState>,
    Path(producer): Path<u32>,
    Query(q): Query<RecoveryQuery>,
) -> Answer {
    let Some(changes) = s.feed.since(producer, q.after) else {
        return answer(
            StatusCode::NOT_FOUND,
            json!({"error": format!("no producer {producer}")}),
        );
    };
    let replaying = changes.len();
    tracing::info!(producer, after = ?q.after, request_id = q.request_id, replaying, "Recovery requested");
    tokio::spawn(async move {
        match replay(&s.feed, &s.publisher, producer, q.after, q.request_id).await {
            Ok(replayed) => {
                s.feed.record_recovery(RecoveryRequest {
                    producer,
                    after: q.after,
                    request_id: q.request_id,
                    replayed,
                });
                tracing::info!(
                    producer,
                    request_id = q.request_id,
                    replayed,
                    "Snapshot complete"
                );
            }
            Err(e) => {
                tracing::error!(producer, request_id = q.request_id, error = %format!("{e:#}"), "Replay failed")
            }
        }
    });
    answer(
        StatusCode::ACCEPTED,
        json!({"request_id": q.request_id, "replaying": replaying}),
    )
}

#[derive(Debug, Deserialize)]
struct ControlQuery {
    mode: AliveMode,
    /// How long the mode holds (humantime: `5s`); until changed without it.
    duration: Option<String>,
}

async fn control(
    State(s): State<AppState>,
    Path(producer): Path<u32>,
    Query(q): Query<ControlQuery>,
) -> Answer {
    let duration: Option<Duration> = match q.duration.as_deref().map(humantime::parse_duration) {
        None => None,
        Some(Ok(d)) => Some(d),
        Some(Err(e)) => {
            return answer(
                StatusCode::BAD_REQUEST,
                json!({"error": format!("duration: {e}")}),
            );
        }
    };
    if !s.feed.set_mode(producer, q.mode, duration) {
        return answer(
            StatusCode::NOT_FOUND,
            json!({"error": format!("no producer {producer}")}),
        );
    }
    tracing::info!(producer, mode = ?q.mode, ?duration, "Alive mode set");
    answer(
        StatusCode::OK,
        json!({"producer": producer, "mode": q.mode}),
    )
}

async fn published(State(s): State<AppState>) -> Json<Value> {
    Json(s.feed.published())
}
