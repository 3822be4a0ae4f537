//! The dbt Cloud webhook receiver: `POST /webhooks/dbt-cloud` verifies the HMAC-SHA256 signature in
//! constant time, drops replays by `eventId` and tells the scheduler loop to look at the run now.
//! The API stays the source of truth: the hint only makes the next poll happen at once.

use crate::dbt_cloud::wire::WebhookEvent;
use crate::engine::event::Event;
use crate::ids::RunId;
use crate::runtime::DaemonHandle;
use crate::secret::Secret;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Json;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

/// Where dbt Cloud posts.
pub const PATH: &str = "/webhooks/dbt-cloud";

/// Event ids remembered for replay detection. dbt Cloud retries a delivery for minutes, not days;
/// a few thousand ids cover far more than that at any realistic run rate.
pub const REMEMBERED_EVENTS: usize = 4096;

/// Counts of what the receiver did, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WebhookStats {
    pub accepted: u64,
    pub duplicates: u64,
    pub bad_signature: u64,
    pub malformed: u64,
    pub ignored: u64,
}

#[derive(Debug)]
struct Receiver {
    secret: Secret,
    handle: DaemonHandle,
    seen: Mutex<Seen>,
    stats: Arc<Mutex<WebhookStats>>,
}

/// A bounded set: the oldest id leaves when a new one arrives at capacity.
#[derive(Debug, Default)]
struct Seen {
    order: VecDeque<String>,
    ids: HashSet<String>,
}

impl Seen {
    fn contains(&self, id: &str) -> bool {
        self.ids.contains(id)
    }

    fn insert(&mut self, id: String) {
        if self.ids.len() >= REMEMBERED_EVENTS {
            if let Some(oldest) = self.order.pop_front() {
                self.ids.remove(&oldest);
            }
        }
        if self.ids.insert(id.clone()) {
            self.order.push_back(id);
        }
    }
}

/// The receiver's routes, with a handle on its counters.
pub fn router_with_stats(
    secret: Secret,
    handle: DaemonHandle,
) -> (axum::Router, Arc<Mutex<WebhookStats>>) {
    router_at(PATH, secret, handle)
}

/// Where the webhooks of the account `name` (one under `accounts:`) are posted: each account's
/// subscription has its own secret.
pub fn account_path(name: &crate::ids::AccountName) -> String {
    format!("{PATH}/{name}")
}

/// A receiver at `path` with its own secret and counters.
pub fn router_at(
    path: &str,
    secret: Secret,
    handle: DaemonHandle,
) -> (axum::Router, Arc<Mutex<WebhookStats>>) {
    let stats = Arc::new(Mutex::new(WebhookStats::default()));
    let receiver = Arc::new(Receiver {
        secret,
        handle,
        seen: Mutex::new(Seen::default()),
        stats: stats.clone(),
    });
    let router = axum::Router::new()
        .route(path, post(receive))
        .with_state(receiver);
    (router, stats)
}

/// `POST /webhooks/dbt-cloud`.
pub fn router(secret: Secret, handle: DaemonHandle) -> axum::Router {
    router_with_stats(secret, handle).0
}

/// Whether `signature` (lowercase hex, as dbt Cloud writes it in `Authorization`) is the
/// HMAC-SHA256 of `body` under `secret`. The comparison takes the same time wherever they differ.
pub fn signature_is_valid(secret: &Secret, body: &[u8], signature: &str) -> bool {
    let Ok(given) = hex::decode(signature.trim()) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&given).is_ok()
}

fn answer(status: StatusCode, text: &str) -> (StatusCode, Json<serde_json::Value>) {
    (status, Json(serde_json::json!({ "status": text })))
}

async fn receive(
    State(receiver): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, Json<serde_json::Value>) {
    let count = |f: fn(&mut WebhookStats)| {
        f(&mut receiver.stats.lock().unwrap_or_else(|p| p.into_inner()));
    };
    let signature = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !signature_is_valid(&receiver.secret, &body, signature) {
        count(|s| s.bad_signature += 1);
        tracing::warn!("webhook refused: missing or bad signature");
        return answer(StatusCode::UNAUTHORIZED, "bad signature");
    }
    let event: WebhookEvent = match serde_json::from_slice(&body) {
        Ok(event) => event,
        Err(e) => {
            count(|s| s.malformed += 1);
            tracing::warn!(error = %e, "webhook refused: not a dbt Cloud run event");
            return answer(StatusCode::BAD_REQUEST, "malformed event");
        }
    };
    if receiver
        .seen
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .contains(&event.event_id)
    {
        count(|s| s.duplicates += 1);
        tracing::debug!(event_id = %event.event_id, "webhook replay ignored");
        return answer(StatusCode::OK, "duplicate");
    }
    let run = event.data.run_id.trim().parse::<i64>().ok().map(RunId);
    let (Some(run), true) = (run, event.event_type.starts_with("job.run.")) else {
        count(|s| s.ignored += 1);
        tracing::debug!(event_type = %event.event_type, "webhook ignored: not a job run event");
        return answer(StatusCode::OK, "ignored");
    };
    if receiver.handle.send(Event::RunHint { run }).is_err() {
        // Not remembered: dbt Cloud retries, and the next daemon may take it.
        return answer(StatusCode::SERVICE_UNAVAILABLE, "scheduler stopped");
    }
    receiver
        .seen
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(event.event_id.clone());
    count(|s| s.accepted += 1);
    tracing::debug!(event_id = %event.event_id, event_type = %event.event_type, run_id = %run, "webhook: looking at the run now");
    answer(StatusCode::OK, "accepted")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_ids_are_bounded_and_forget_the_oldest() {
        let mut seen = Seen::default();
        for i in 0..REMEMBERED_EVENTS + 10 {
            seen.insert(format!("wev_{i}"));
        }
        assert_eq!(seen.ids.len(), REMEMBERED_EVENTS);
        assert_eq!(seen.order.len(), REMEMBERED_EVENTS);
        assert!(!seen.contains("wev_0"));
        assert!(seen.contains(&format!("wev_{}", REMEMBERED_EVENTS + 9)));
    }

    #[test]
    fn signatures_are_checked_against_the_body() {
        let secret = Secret::new("whsec");
        let body = br#"{"a":1}"#;
        let good = crate::emulator::webhooks::signature("whsec", body);
        assert!(signature_is_valid(&secret, body, &good));
        assert!(!signature_is_valid(&secret, b"{}", &good));
        assert!(!signature_is_valid(&secret, body, ""));
        assert!(!signature_is_valid(&secret, body, "zz"));
        assert!(!signature_is_valid(&secret, body, &good[..32]));
    }
}
