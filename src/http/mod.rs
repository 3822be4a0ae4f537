//! The control API (axum 0.8): JSON under `/api/v1` (pipelines, pipeline runs, backfills, `why`,
//! and the operator's actions), `/healthz` and `/readyz`. It never writes the store: reads run
//! inside the scheduler loop through `DaemonHandle::inspect` (archived runs through the handle's
//! read-only history reader), actions go in as operator events.
//! Like the emulator, `serve` takes its listener and its shutdown token, so tests bind port 0.
//!
//! Routes (every `/api/v1` route needs `Authorization: Bearer <token>` when a token is configured;
//! run ids are percent-encoded path segments):
//! - `GET /healthz` (process up), `GET /readyz` (loop answering, dbt Cloud answered within 30 s);
//! - `GET /api/v1/pipelines`, `GET /api/v1/pipelines/{name}` (definition, next fire times,
//!   paused/suspended, last runs), `GET /api/v1/pipelines/{name}/runs?limit=N` (steps, attempts,
//!   dbt Cloud run ids and links, failure details), `GET /api/v1/pipelines/{name}/why?step=S`,
//!   `GET /api/v1/pipelines/{name}/trends` (each step's durations, median, slowest runs);
//! - `GET /api/v1/runs/{id}`; `POST /api/v1/runs/{id}/cancel`, `POST /api/v1/runs/{id}/retry`;
//! - `POST /api/v1/pipelines/{name}/trigger` (`{"logical_date": "2026-03-01"}` optional),
//!   `POST .../pause`, `POST .../resume`;
//! - `POST /api/v1/pipelines/{name}/backfills` (`from`, `to`, `every`, `max_active`, `reprocess`,
//!   `dry_run`), `GET /api/v1/backfills`, `GET /api/v1/backfills/{id}`,
//!   `POST /api/v1/backfills/{id}/cancel`.
//!
//! Answers: 200 (reads, pause/resume, dry run), 201 (backfill created), 202 (trigger, cancel,
//! retry accepted), 400 (bad input), 401 (token), 404 (unknown), 405, 409 (not allowed in the
//! current state), 503 (the loop is stopping). Errors are `{"error": "..."}`.

mod actions;
pub mod auth;
pub mod error;
mod reads;
pub mod views;

use crate::dbt_cloud::client::{DbtCloudClient, ListRuns};
use crate::runtime::DaemonHandle;
use crate::secret::Secret;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use error::HttpError;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

pub use auth::check_listen;

/// How long a dbt Cloud reachability probe answers `/readyz`.
const PROBE_TTL: Duration = Duration::from_secs(30);
/// How long `/readyz` waits for dbt Cloud.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    handle: DaemonHandle,
    token: Option<Arc<Secret>>,
    client: Option<DbtCloudClient>,
    probe: Arc<Mutex<Option<Probe>>>,
    /// On the leader of an HA deployment: its role and the leader's name and address, which
    /// `/readyz` adds to its answer.
    node_role: Option<NodeRole>,
}

/// This node's role as JSON fields (`role`, `node`, `leader`, `leader_address`, `epoch`).
pub type NodeRole = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// When dbt Cloud was last asked, and what came of it.
type Probe = (tokio::time::Instant, Result<(), String>);

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// `token`: the bearer token every `/api/v1` request must carry (none: open, loopback only).
    /// `client`: used by `/readyz` to check that dbt Cloud answers (none: not checked).
    pub fn new(
        handle: DaemonHandle,
        token: Option<Secret>,
        client: Option<DbtCloudClient>,
    ) -> Self {
        Self {
            handle,
            token: token.map(Arc::new),
            client,
            probe: Arc::new(Mutex::new(None)),
            node_role: None,
        }
    }

    /// Adds the node's role to `/readyz` (the leader of an HA deployment).
    pub fn with_node_role(mut self, role: NodeRole) -> Self {
        self.node_role = Some(role);
        self
    }
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/pipelines", get(reads::pipelines))
        .route("/pipelines/{name}", get(reads::pipeline))
        .route("/pipelines/{name}/runs", get(reads::pipeline_runs))
        .route("/pipelines/{name}/why", get(reads::why))
        .route("/pipelines/{name}/trends", get(reads::trends))
        .route("/pipelines/{name}/trigger", post(actions::trigger))
        .route("/pipelines/{name}/pause", post(actions::pause))
        .route("/pipelines/{name}/resume", post(actions::resume))
        .route(
            "/pipelines/{name}/backfills",
            post(actions::create_backfill),
        )
        .route("/runs/{id}", get(reads::run))
        .route("/runs/{id}/cancel", post(actions::cancel))
        .route("/runs/{id}/retry", post(actions::retry))
        .route("/backfills", get(reads::backfills))
        .route("/backfills/{id}", get(reads::backfill))
        .route("/backfills/{id}/cancel", post(actions::cancel_backfill))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .nest("/api/v1", api)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// Serves `router` on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({ "status": "ok" }))
}

/// Ready when the scheduler loop answers (its state is loaded) and dbt Cloud answered a cheap
/// request within the last half minute. On the leader of an HA deployment the answer, ready or
/// not, also says the node's role and the leader's name and address.
async fn readyz(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> axum::response::Response {
    let (status, mut body) = match readiness(&state).await {
        Ok(()) => (
            StatusCode::OK,
            serde_json::json!({ "status": "ready", "state": "loaded", "dbt_cloud": "reachable" }),
        ),
        Err(e) => (e.status, serde_json::json!({ "error": e.message })),
    };
    if let (Some(role), Some(fields)) = (&state.node_role, body.as_object_mut()) {
        if let serde_json::Value::Object(role) = role() {
            fields.extend(role);
        }
    }
    (status, Json(body)).into_response()
}

async fn readiness(state: &AppState) -> Result<(), HttpError> {
    state.handle.inspect(|_, _| ()).await.map_err(|_| {
        HttpError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the scheduler loop is not running",
        )
    })?;
    if let Some(client) = &state.client {
        let mut cached = state.probe.lock().await;
        let fresh = cached
            .as_ref()
            .is_some_and(|(at, _)| at.elapsed() < PROBE_TTL);
        if !fresh {
            let query = ListRuns {
                limit: Some(1),
                ..ListRuns::default()
            };
            // A probe that retries for long is an answer too: not reachable right now.
            let result =
                match tokio::time::timeout(PROBE_TIMEOUT, client.list_runs_page(&query)).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!("no answer within {}s", PROBE_TIMEOUT.as_secs())),
                };
            *cached = Some((tokio::time::Instant::now(), result));
        }
        if let Some((_, Err(message))) = cached.as_ref() {
            return Err(HttpError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("dbt Cloud is not reachable: {message}"),
            ));
        }
    }
    Ok(())
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> HttpError {
    HttpError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{} is not allowed on {}: reads are GET, actions are POST",
            method,
            uri.path()
        ),
    )
}

async fn not_found(uri: axum::http::Uri) -> HttpError {
    HttpError::not_found(format!(
        "no route {}; the API lives under /api/v1 (pipelines, runs, backfills)",
        uri.path()
    ))
}
