//! A flaky HTTP service for the sink's tests: records every request, answers 200, or 503
//! while "down", 400 for the ids it is told to refuse, 429 with `Retry-After` once for others.

#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

/// One request the service received.
#[derive(Debug, Clone)]
pub struct Received {
    pub path_key: String,
    pub idempotency_key: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub status: u16,
    pub at: Instant,
}

#[derive(Default)]
struct Inner {
    down: bool,
    /// Go down by itself once this many requests were accepted.
    down_after: Option<usize>,
    refuse: HashSet<String>,
    throttle_once: HashMap<String, u64>,
    accepted: usize,
    log: Vec<Received>,
}

/// The service's controls and record.
#[derive(Clone, Default)]
pub struct Service(Arc<Mutex<Inner>>);

impl Service {
    pub fn set_down(&self, down: bool) {
        self.0.lock().unwrap().down = down;
    }

    pub fn is_down(&self) -> bool {
        self.0.lock().unwrap().down
    }

    /// Goes down by itself after `n` accepted requests.
    pub fn down_after(&self, n: usize) {
        self.0.lock().unwrap().down_after = Some(n);
    }

    /// Answers 400 to requests whose body holds `"id":N` for this N.
    pub fn refuse(&self, id: u64) {
        self.0
            .lock()
            .unwrap()
            .refuse
            .insert(format!("\"id\":{id},"));
    }

    /// Answers 429 with `Retry-After: secs` to the first request for `id`.
    pub fn throttle_once(&self, id: u64, secs: u64) {
        self.0
            .lock()
            .unwrap()
            .throttle_once
            .insert(format!("\"id\":{id},"), secs);
    }

    pub fn log(&self) -> Vec<Received> {
        self.0.lock().unwrap().log.clone()
    }

    pub fn accepted(&self) -> usize {
        self.0.lock().unwrap().accepted
    }

    fn answer(&self, key: String, headers: HeaderMap, body: Bytes) -> Response {
        let mut st = self.0.lock().unwrap();
        if st.down_after.is_some_and(|n| st.accepted >= n) {
            st.down_after = None;
            st.down = true;
        }
        let text = String::from_utf8_lossy(&body).into_owned();
        let throttle = st
            .throttle_once
            .iter()
            .find(|(id, _)| text.contains(id.as_str()))
            .map(|(id, s)| (id.clone(), *s));
        let (status, extra) = if st.down {
            (StatusCode::SERVICE_UNAVAILABLE, None)
        } else if st.refuse.iter().any(|id| text.contains(id.as_str())) {
            (StatusCode::BAD_REQUEST, None)
        } else if let Some((id, secs)) = throttle {
            st.throttle_once.remove(&id);
            (StatusCode::TOO_MANY_REQUESTS, Some(secs))
        } else {
            st.accepted += 1;
            (StatusCode::OK, None)
        };
        st.log.push(Received {
            path_key: key,
            idempotency_key: headers
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            headers,
            body,
            status: status.as_u16(),
            at: Instant::now(),
        });
        match (status, extra) {
            (StatusCode::BAD_REQUEST, _) => {
                (status, "{\"error\":\"field `seq` refused\"}").into_response()
            }
            (_, Some(secs)) => {
                (status, [("retry-after", secs.to_string())], "slow down").into_response()
            }
            _ => status.into_response(),
        }
    }
}

async fn handle(
    State(service): State<Service>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    service.answer(key, headers, body)
}

/// Serves `service` on 127.0.0.1 (port 0 unless `port` is given) until the test ends.
pub async fn serve(service: Service, port: u16) -> SocketAddr {
    let app = Router::new()
        .route("/events/{key}", post(handle))
        .with_state(service);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind the test service");
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("test service");
    });
    addr
}

/// Waits for `cond` with a deadline.
pub async fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Everything `tracing` writes in this test binary (one global subscriber: a thread-local one
/// would miss callsites first reached by another test's thread).
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    /// The binary's log capture, installed on first use.
    pub fn global() -> Logs {
        static LOGS: std::sync::OnceLock<Logs> = std::sync::OnceLock::new();
        LOGS.get_or_init(|| {
            let logs = Logs::default();
            let writer = logs.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_ansi(false)
                .with_max_level(tracing::Level::INFO)
                .with_writer(move || writer.clone())
                .finish();
            tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
            logs
        })
        .clone()
    }

    /// The lines that mention `needle`.
    pub fn lines_with(&self, needle: &str) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
