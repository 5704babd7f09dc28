//! The downstream service of the HTTP outage test: accepts events, goes down (503) by itself
//! after a number of them until told to come back, and records first acceptances per entity.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;

#[derive(Default)]
struct Inner {
    down: bool,
    down_after: Option<usize>,
    seen: HashSet<String>,
    /// Per entity, the `seq` of each event in the order first accepted.
    order: HashMap<String, Vec<u64>>,
    requests_while_down: usize,
}

/// The service's controls and record.
#[derive(Clone, Default)]
pub struct Service(Arc<Mutex<Inner>>);

impl Service {
    /// Goes down by itself once `n` distinct events were accepted.
    pub fn down_after(&self, n: usize) {
        self.0.lock().unwrap().down_after = Some(n);
    }

    pub fn is_down(&self) -> bool {
        self.0.lock().unwrap().down
    }

    pub fn come_back(&self) {
        self.0.lock().unwrap().down = false;
    }

    /// Distinct events accepted.
    pub fn accepted(&self) -> usize {
        self.0.lock().unwrap().seen.len()
    }

    /// Requests answered 503.
    pub fn requests_while_down(&self) -> usize {
        self.0.lock().unwrap().requests_while_down
    }

    /// Per entity, the first-acceptance order of `seq`.
    pub fn order(&self) -> HashMap<String, Vec<u64>> {
        self.0.lock().unwrap().order.clone()
    }

    fn answer(&self, body: &[u8]) -> StatusCode {
        let mut st = self.0.lock().unwrap();
        if st.down_after.is_some_and(|n| st.seen.len() >= n) {
            st.down_after = None;
            st.down = true;
        }
        if st.down {
            st.requests_while_down += 1;
            return StatusCode::SERVICE_UNAVAILABLE;
        }
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
            return StatusCode::BAD_REQUEST;
        };
        let (Some(id), Some(entity), Some(seq)) =
            (v["id"].as_str(), v["entity"].as_str(), v["seq"].as_u64())
        else {
            return StatusCode::BAD_REQUEST;
        };
        if st.seen.insert(id.to_owned()) {
            st.order.entry(entity.to_owned()).or_default().push(seq);
        }
        StatusCode::OK
    }
}

async fn handle(State(service): State<Service>, body: Bytes) -> StatusCode {
    service.answer(&body)
}

/// Serves `service` on 127.0.0.1, port 0.
pub async fn serve(service: Service) -> SocketAddr {
    let app = Router::new()
        .route("/events", post(handle))
        .with_state(service);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}
