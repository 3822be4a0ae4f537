//! The control API (axum 0.8): JSON under `/api/v1` (pipelines, pipeline runs, backfills, `why`,
//! and the operator's actions), `/healthz` and `/readyz`. It never writes the store: reads run
//! inside the scheduler loop through `DaemonHandle::inspect` (archived runs through the handle's
//! read-only history reader), actions go in as operator events.
//! Like the emulator, `serve` takes its listener and its shutdown token, so tests bind port 0.
//!
//! Routes (every `/api/v1` route needs `Authorization: Bearer <token>` when a token is configured;
//! run ids are percent-encoded path segments):
//! - `GET /healthz` (process up), `GET /readyz` (loop answering, every account's dbt Cloud answered
//!   within 30 s);
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

use crate::dbt_cloud::client::DbtCloudClient;
use crate::ids::AccountName;
use crate::runtime::DaemonHandle;
use crate::secret::Secret;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use error::HttpError;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

pub use auth::check_listen;

/// How recent an answer of dbt Cloud (to any request of an account's client, or to `/readyz`'s own
/// probe) `/readyz` takes as that account being reachable.
const PROBE_TTL: Duration = Duration::from_secs(30);
/// How long `/readyz` waits for dbt Cloud.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    handle: DaemonHandle,
    token: Option<Arc<Secret>>,
    /// The client of every configured account, `default` first.
    clients: Arc<Vec<(AccountName, DbtCloudClient)>>,
    /// Each account's last failed probe: asked again only once it is older than `PROBE_TTL`.
    failures: Arc<Mutex<BTreeMap<AccountName, Failure>>>,
    /// On the leader of an HA deployment: its role and the leader's name and address, which
    /// `/readyz` adds to its answer.
    node_role: Option<NodeRole>,
}

/// This node's role as JSON fields (`role`, `node`, `leader`, `leader_address`, `epoch`).
pub type NodeRole = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// When `/readyz`'s probe of an account failed, and why.
type Failure = (tokio::time::Instant, String);

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// `token`: the bearer token every `/api/v1` request must carry (none: open, loopback only).
    /// `client`: the account `default`'s, which `/readyz` checks answers (none: not checked).
    pub fn new(
        handle: DaemonHandle,
        token: Option<Secret>,
        client: Option<DbtCloudClient>,
    ) -> Self {
        Self {
            handle,
            token: token.map(Arc::new),
            clients: Arc::new(
                client
                    .map(|c| (AccountName::default(), c))
                    .into_iter()
                    .collect(),
            ),
            failures: Arc::new(Mutex::new(BTreeMap::new())),
            node_role: None,
        }
    }

    /// Adds the node's role to `/readyz` (the leader of an HA deployment).
    pub fn with_node_role(mut self, role: NodeRole) -> Self {
        self.node_role = Some(role);
        self
    }

    /// The account `default`'s client, when there is one.
    pub(crate) fn default_client(&self) -> Option<&DbtCloudClient> {
        self.clients
            .iter()
            .find(|(account, _)| account.is_default())
            .map(|(_, client)| client)
    }

    /// Adds the clients of the accounts beside `default`; `/readyz` checks each of them too.
    pub fn with_accounts(
        mut self,
        accounts: impl IntoIterator<Item = (AccountName, DbtCloudClient)>,
    ) -> Self {
        let mut clients = (*self.clients).clone();
        clients.extend(accounts);
        self.clients = Arc::new(clients);
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

/// Ready when the scheduler loop answers (its state is loaded) and dbt Cloud answered every
/// configured account within the last half minute: any successful request of the account's client
/// counts, so an account the scheduler is talking to costs no request here; only an account quiet
/// that long is probed (all such at once), and a failed probe is not repeated for half a minute.
/// On the leader of an HA deployment the answer, ready or not, also says the node's role and the
/// leader's name and address.
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
    let quiet: Vec<&(AccountName, DbtCloudClient)> = state
        .clients
        .iter()
        .filter(|(_, client)| !client.answered_within(PROBE_TTL))
        .collect();
    if !quiet.is_empty() {
        let mut failures = state.failures.lock().await;
        let mut probes = tokio::task::JoinSet::new();
        for (account, client) in quiet {
            // Another request may have answered while this one waited for the lock.
            if client.answered_within(PROBE_TTL) {
                continue;
            }
            let failed_lately = failures
                .get(account)
                .is_some_and(|(at, _)| at.elapsed() < PROBE_TTL);
            if !failed_lately {
                let (account, client) = (account.clone(), client.clone());
                probes.spawn(async move { (account, probe(&client).await) });
            }
        }
        while let Some(done) = probes.join_next().await {
            let Ok((account, result)) = done else {
                continue;
            };
            match result {
                Ok(()) => failures.remove(&account),
                Err(message) => failures.insert(account, (tokio::time::Instant::now(), message)),
            };
        }
        let unreachable: Vec<String> = state
            .clients
            .iter()
            .filter(|(_, client)| !client.answered_within(PROBE_TTL))
            .filter_map(|(account, _)| {
                let (at, message) = failures.get(account)?;
                (at.elapsed() < PROBE_TTL).then(|| {
                    if state.clients.len() == 1 {
                        message.clone()
                    } else {
                        format!("account `{}`: {message}", account.0)
                    }
                })
            })
            .collect();
        if !unreachable.is_empty() {
            return Err(HttpError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("dbt Cloud is not reachable: {}", unreachable.join("; ")),
            ));
        }
    }
    Ok(())
}

/// One cheap request (the account itself, a route the scheduler never uses, so that counting a
/// route's requests tells polls from probes). A probe that retries for long is an answer too: not
/// reachable right now.
async fn probe(client: &DbtCloudClient) -> Result<(), String> {
    match tokio::time::timeout(PROBE_TIMEOUT, client.check_account()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {}s", PROBE_TIMEOUT.as_secs())),
    }
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
