//! `baton run` with `store: postgres:`: the node contends for the lease (`ha::Elector`) and stands
//! by until it gets it, answering on `http.listen` with its role and where the leader is
//! (`/healthz`, `/readyz`, `/leader`, and a redirect to the leader for `/api/v1/...`). As leader it
//! opens the shared store fenced by its epoch and runs the scheduler like a single node, every
//! action gated by its term; `takeover_hold` keeps attempts the previous leader left triggering
//! until none of its requests can still land. A leader that loses its term stops acting at once,
//! drops its scheduler (engine, clients, store, API server, tasks) and stands by again in the
//! same process.

use super::daemon::{serve_with, Leadership, NodeSignals, RunArgs};
use crate::config::daemon::DaemonConfig;
use crate::config::store::PostgresConfig;
use crate::ha::{Elector, ElectorConfig, ElectorStats, Role, Term};
use crate::ops::systemd::SdNotifier;
use crate::runtime::{ActingGate, NotLeader};
use crate::store::postgres::{Fence, PostgresBackend};
use crate::store::{Store, StoreError};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use std::sync::Arc;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What the node says about leadership, on `/leader` and a standby's `/readyz`.
#[derive(Clone)]
pub(super) struct RoleView {
    node: String,
    /// This node's API address (`http.advertise`, else the bound address).
    advertise: String,
    role: watch::Receiver<Role>,
    stats: Arc<ElectorStats>,
}

impl RoleView {
    fn json(&self) -> serde_json::Value {
        let role = self.role.borrow().clone();
        match role {
            Role::Leader(term) => serde_json::json!({
                "role": if term.valid_until > Instant::now() { "leader" } else { "stepping down" },
                "node": self.node,
                "leader": self.node,
                "leader_address": self.advertise,
                "epoch": term.epoch.0,
            }),
            Role::Standby { leader, problem } => serde_json::json!({
                "role": "standby",
                "node": self.node,
                "leader": leader.as_ref().filter(|l| l.live).map(|l| l.node.clone()),
                "leader_address": leader.as_ref().filter(|l| l.live).map(|l| l.advertise.clone()),
                "problem": problem,
            }),
        }
    }

    /// `baton_leader`, leadership changes and the last renewal's latency, for `/metrics`.
    pub(super) fn metrics(&self) -> String {
        use std::sync::atomic::Ordering;
        let leader = u8::from(self.role.borrow().is_acting(Instant::now()));
        format!(
            "# HELP baton_leader 1 while this node leads.\n# TYPE baton_leader gauge\nbaton_leader {leader}\n\
             # HELP baton_leadership_changes_total Times this node became or stopped being leader.\n\
             # TYPE baton_leadership_changes_total counter\nbaton_leadership_changes_total {}\n\
             # HELP baton_lease_renew_seconds Latency of the last lease renewal.\n\
             # TYPE baton_lease_renew_seconds gauge\nbaton_lease_renew_seconds {:.6}\n",
            self.stats.leadership_changes.load(Ordering::Relaxed),
            self.stats.last_renew_micros.load(Ordering::Relaxed) as f64 / 1e6,
        )
    }

    /// The status page's line for this node: its role and the leader's name and address.
    pub(super) fn note(&self) -> crate::ops::status_page::Note {
        let view = self.clone();
        Arc::new(move || role_sentence(&view.json()))
    }

    /// The role fields `/readyz` adds on the leader.
    pub(super) fn readiness(&self) -> crate::http::NodeRole {
        let view = self.clone();
        Arc::new(move || view.json())
    }

    pub(super) fn router(&self) -> Router {
        Router::new()
            .route("/leader", get(leader_info))
            .with_state(self.clone())
    }
}

async fn leader_info(State(view): State<RoleView>) -> impl IntoResponse {
    Json(view.json())
}

async fn standby_readyz(State(view): State<RoleView>) -> impl IntoResponse {
    (StatusCode::SERVICE_UNAVAILABLE, Json(view.json()))
}

/// A standby sends API callers to the leader (307 keeps the method and body), or says that
/// there is no leader right now.
async fn standby_api(State(view): State<RoleView>, uri: axum::http::Uri) -> Response {
    let info = view.json();
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    match info["leader_address"].as_str().filter(|a| !a.is_empty()) {
        Some(address) => {
            let location = format!("{}{path}", address.trim_end_matches('/'));
            (
                StatusCode::TEMPORARY_REDIRECT,
                [(header::LOCATION, location)],
                Json(info),
            )
                .into_response()
        }
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "2")],
            Json(serde_json::json!({
                "error": "this node is a standby and no leader is known right now; try again shortly",
                "role": info,
            })),
        )
            .into_response(),
    }
}

fn standby_router(view: &RoleView) -> Router {
    let metrics_view = view.clone();
    Router::new()
        .route(
            "/healthz",
            get(|| async { Json(serde_json::json!({ "status": "ok" })) }),
        )
        .route("/readyz", get(standby_readyz))
        .route("/leader", get(leader_info))
        .route(
            "/metrics",
            get(move || {
                let text = metrics_view.metrics();
                async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text) }
            }),
        )
        .route("/", get(standby_page))
        .fallback(standby_api)
        .with_state(view.clone())
}

async fn standby_page(State(view): State<RoleView>) -> impl IntoResponse {
    let text = format!("baton: {}\n", role_sentence(&view.json()));
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text)
}

/// `Node baton-a: leader (epoch 7). Leader: baton-a at http://10.0.0.5:8080.`
fn role_sentence(info: &serde_json::Value) -> String {
    let leader = match (info["leader"].as_str(), info["leader_address"].as_str()) {
        (Some(name), Some(address)) if !address.is_empty() => format!("{name} at {address}"),
        (Some(name), _) => name.to_string(),
        _ => "none right now".to_string(),
    };
    let role = info["role"].as_str().unwrap_or("");
    let epoch = info["epoch"]
        .as_i64()
        .map(|e| format!(" (epoch {e})"))
        .unwrap_or_default();
    format!(
        "Node {}: {role}{epoch}. Leader: {leader}.",
        info["node"].as_str().unwrap_or("")
    )
}

fn status_line(role: &Role) -> String {
    match role {
        Role::Leader(term) => format!("leader (epoch {}); scheduling", term.epoch),
        Role::Standby {
            leader: Some(l), ..
        } if l.live => format!("standby; leader is {} ({})", l.node, l.advertise),
        Role::Standby {
            problem: Some(p), ..
        } => format!("standby; database unreachable: {p}"),
        Role::Standby { .. } => "standby; waiting for the lease".to_string(),
    }
}

/// Runs the node: standby until it leads, then the scheduler until it is asked to stop or is
/// deposed; a deposed leader drops its scheduler and stands by again in the same process.
pub(super) async fn serve(
    config: DaemonConfig,
    args: &RunArgs,
    signals: NodeSignals,
    pipelines: Vec<crate::model::pipeline::Pipeline>,
    postgres: &PostgresConfig,
) -> anyhow::Result<()> {
    let url = postgres.resolve_url()?;
    // One socket for both parts: the standby's answers, then the leader's API.
    let socket = std::net::TcpListener::bind(config.http.listen)
        .and_then(|s| s.set_nonblocking(true).map(|()| s))
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on {} (`http.listen`): {e}",
                config.http.listen
            )
        })?;
    let bound = socket.local_addr()?;
    let advertise = config
        .http
        .advertise
        .as_ref()
        .map(|u| u.as_str().trim_end_matches('/').to_string())
        .unwrap_or_else(|| format!("http://{bound}"));
    if config.http.advertise.is_none() && config.http.listen.ip().is_unspecified() {
        tracing::warn!(listen = %config.http.listen, "`http.advertise` is not set: standbys will name this node's leader address as {advertise}, which other hosts cannot reach");
    }
    let (elector, role) = Elector::new(
        ElectorConfig {
            node: config.node_name.clone(),
            advertise: advertise.clone(),
            lease: postgres.lease,
            request_timeout: config.dbt_cloud.request_timeout,
        },
        url.clone(),
    );
    let view = RoleView {
        node: config.node_name.clone(),
        advertise,
        role: role.clone(),
        stats: elector.stats(),
    };
    let elector_stop = CancellationToken::new();
    let elector_task = tokio::spawn(elector.run(elector_stop.clone()));
    let node = Node {
        config,
        args,
        signals,
        url,
        lease: postgres.lease,
        socket,
        view,
        role,
    };
    let result = node.alternate(pipelines).await;
    // The scheduler has stopped (or never ran): the lease can go at once.
    elector_stop.cancel();
    let _ = elector_task.await;
    result
}

/// One node's parts that outlive each term.
struct Node<'a> {
    config: DaemonConfig,
    args: &'a RunArgs,
    signals: NodeSignals,
    url: crate::secret::Secret,
    lease: std::time::Duration,
    socket: std::net::TcpListener,
    view: RoleView,
    role: watch::Receiver<Role>,
}

/// How a term of this node ended.
enum TermEnd {
    /// Asked to stop (SIGTERM, SIGINT): the process ends.
    Stopped,
    /// The term ran out, the lease was lost, a write was fenced, or the store failed: stand by.
    SteppedDown,
}

impl Node<'_> {
    /// Standby, leader, standby again, ... until the process is asked to stop.
    async fn alternate(
        &self,
        pipelines: Vec<crate::model::pipeline::Pipeline>,
    ) -> anyhow::Result<()> {
        let systemd = SdNotifier::from_env();
        let mut pipelines = pipelines;
        // When the last term of this process ended: its calls in flight may still land.
        let mut last_term_end: Option<Instant> = None;
        tracing::info!(node = %self.config.node_name, listen = %self.config.http.listen, "baton started as a standby; contending for the lease");
        let _ = systemd.ready();
        loop {
            let Some(term) = self.stand_by(&systemd, last_term_end).await else {
                return Ok(());
            };
            match self.lead(term, &mut pipelines, last_term_end).await? {
                TermEnd::Stopped => return Ok(()),
                TermEnd::SteppedDown => {
                    last_term_end = Some(Instant::now());
                    tracing::warn!(node = %self.config.node_name, epoch = %term.epoch,
                        "no longer the leader: the scheduler stopped without acting; standing by again");
                }
            }
        }
    }

    /// Answers as a standby until this node holds a running term (returned), or until the process
    /// is asked to stop (`None`). After a term of its own, it waits a moment before leading again
    /// so that a store that keeps failing is not hammered.
    async fn stand_by(&self, systemd: &SdNotifier, last_term_end: Option<Instant>) -> Option<Term> {
        let listener = match self
            .socket
            .try_clone()
            .and_then(tokio::net::TcpListener::from_std)
        {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "cannot answer as a standby on the API socket");
                return None;
            }
        };
        let standby_stop = CancellationToken::new();
        let server = tokio::spawn(crate::http::serve(
            listener,
            standby_router(&self.view),
            standby_stop.clone(),
        ));
        tracing::info!(listen = %self.socket.local_addr().map_or_else(|_| String::new(), |a| a.to_string()), "standby answering: /healthz, /readyz, /leader, /metrics; the API redirects to the leader");
        let not_before = last_term_end.map(|at| at + (self.lease / 4));
        let mut watching = self.role.clone();
        let term = loop {
            let now = watching.borrow_and_update().clone();
            let _ = systemd.status(&status_line(&now));
            match now {
                Role::Leader(term)
                    if term.valid_until > Instant::now()
                        && not_before.is_none_or(|at| Instant::now() >= at) =>
                {
                    break Some(term)
                }
                _ => {}
            }
            let pause = not_before.filter(|at| *at > Instant::now());
            tokio::select! {
                _ = self.signals.stop.cancelled() => break None,
                changed = watching.changed() => if changed.is_err() {
                    tracing::error!("the elector stopped");
                    break None;
                },
                _ = tokio::time::sleep_until(pause.unwrap_or_else(Instant::now)), if pause.is_some() => {}
            }
        };
        standby_stop.cancel();
        let _ = server.await;
        term
    }

    /// Runs the scheduler for `term` over the fenced shared store until it stops.
    async fn lead(
        &self,
        term: Term,
        pipelines: &mut Vec<crate::model::pipeline::Pipeline>,
        last_term_end: Option<Instant>,
    ) -> anyhow::Result<TermEnd> {
        let config = &self.config;
        tracing::info!(node = %config.node_name, epoch = %term.epoch, "leading: opening the shared store");
        // The files may have changed while this node stood by: lead with what they say now.
        match crate::config::load_pipelines(std::slice::from_ref(&config.pipelines_dir)) {
            Ok(now) => *pipelines = now,
            Err(diagnostics) => {
                tracing::error!("the pipeline files have problems now; leading with the last good ones:\n{diagnostics}");
            }
        }
        let fence = Fence {
            node: config.node_name.clone(),
            epoch: term.epoch,
            lease: self.lease,
        };
        let store_url = self.url.clone();
        let opened =
            tokio::task::spawn_blocking(move || PostgresBackend::open(&store_url, Some(fence)))
                .await?;
        let store = match opened {
            Ok(store) => Store::with_backend(Box::new(store)),
            Err(e) => {
                tracing::error!(error = %e, "cannot open the shared store as the leader");
                return Ok(TermEnd::SteppedDown);
            }
        };
        // Only this term: a later term of this same node has a runtime of its own.
        let epoch = term.epoch;
        let gate_role = self.role.clone();
        let gate = ActingGate::new(move || acting_in(&gate_role.borrow(), epoch, Instant::now()));
        let speed = self.args.clock.scaled()?.map_or(1.0, |c| c.speed());
        // Requests of an earlier term may still land: of another node's until `resend_after`, of
        // this node's own last term until a request timeout after it ended.
        let mut resend_after = term.resend_after;
        if let Some(ended) = last_term_end {
            resend_after = resend_after.max(ended + config.dbt_cloud.request_timeout);
        }
        let hold = resend_after
            .saturating_duration_since(Instant::now())
            .mul_f64(speed);
        let leadership = Leadership {
            socket: self.socket.try_clone()?,
            gate,
            takeover_hold: hold,
            role: self.role.clone(),
            epoch,
            extra: self.view.clone(),
        };
        let result = serve_with(
            config.clone(),
            self.args,
            self.signals.clone(),
            pipelines.clone(),
            store,
            Some(leadership),
        )
        .await;
        let still_acting = acting_in(&self.role.borrow(), epoch, Instant::now());
        if self.signals.stop.is_cancelled() && still_acting {
            return result.map(|()| TermEnd::Stopped);
        }
        if self.signals.stop.is_cancelled() {
            return Ok(TermEnd::Stopped);
        }
        let stepped_down = !still_acting
            || result.as_ref().err().is_some_and(|e| {
                e.chain().any(|cause| {
                    cause.is::<NotLeader>() || cause.downcast_ref::<StoreError>().is_some()
                })
            });
        match result {
            Err(e) if !stepped_down => Err(e),
            Err(e) => {
                if !e.chain().any(|cause| cause.is::<NotLeader>()) {
                    tracing::error!("the scheduler stopped: {e:#}");
                }
                Ok(TermEnd::SteppedDown)
            }
            Ok(()) => Ok(TermEnd::SteppedDown),
        }
    }
}

/// Whether `role` is a running term numbered `epoch`.
fn acting_in(role: &Role, epoch: crate::ha::Epoch, now: Instant) -> bool {
    role.term()
        .is_some_and(|t| t.epoch == epoch && now < t.valid_until)
}

/// Cancels `shutdown` as soon as this node may no longer act in term `epoch`: the elector stepped
/// down, or the term ran out without a renewal (the elector may be stuck).
pub(super) async fn watch_term(
    mut role: watch::Receiver<Role>,
    epoch: crate::ha::Epoch,
    shutdown: CancellationToken,
) {
    loop {
        let Some(term) = role.borrow_and_update().term().filter(|t| t.epoch == epoch) else {
            break;
        };
        if term.valid_until <= Instant::now() {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(term.valid_until) => {}
            changed = role.changed() => if changed.is_err() { break },
            _ = shutdown.cancelled() => return,
        }
    }
    tracing::error!("this node is no longer the leader: stopping at once, without acting");
    shutdown.cancel();
}
