//! `baton run` with `store: postgres:`: the node contends for the lease (`ha::Elector`) and stands
//! by until it gets it, answering on `http.listen` with its role and where the leader is
//! (`/healthz`, `/readyz`, `/leader`, and a redirect to the leader for `/api/v1/...`). As leader it
//! opens the shared store fenced by its epoch and runs the scheduler like a single node, every
//! action gated by its term; `takeover_hold` keeps attempts the previous leader left triggering
//! until none of its requests can still land. A leader that loses its term stops acting at once
//! and exits with a failure, so the service manager starts it again as a standby.

use super::daemon::{serve_with, Leadership, RunArgs, Signals};
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
        Arc::new(move || {
            let info = view.json();
            format!(
                "Node {}: {} (epoch {}).",
                info["node"].as_str().unwrap_or(""),
                info["role"].as_str().unwrap_or(""),
                info["epoch"]
            )
        })
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
    let info = view.json();
    let leader = match (info["leader"].as_str(), info["leader_address"].as_str()) {
        (Some(name), Some(address)) if !address.is_empty() => format!("{name} at {address}"),
        (Some(name), _) => name.to_string(),
        _ => "none right now".to_string(),
    };
    let text = format!(
        "baton node {}: standby. Leader: {leader}.\n",
        info["node"].as_str().unwrap_or("")
    );
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text)
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

/// Runs the node: standby until it leads, then the scheduler until it stops or is deposed.
pub(super) async fn serve(
    config: DaemonConfig,
    args: &RunArgs,
    mut signals: Signals,
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
            advertise,
            lease: postgres.lease,
            request_timeout: config.dbt_cloud.request_timeout,
        },
        url.clone(),
    );
    let view = RoleView {
        node: config.node_name.clone(),
        role: role.clone(),
        stats: elector.stats(),
    };
    let elector_stop = CancellationToken::new();
    let elector_task = tokio::spawn(elector.run(elector_stop.clone()));
    let stop_elector = || async {
        elector_stop.cancel();
        let _ = elector_task.await;
    };
    let systemd = SdNotifier::from_env();

    // Standby: answer on the listener until this node leads.
    let listener = tokio::net::TcpListener::from_std(socket.try_clone()?)?;
    let standby_stop = CancellationToken::new();
    let server = tokio::spawn(crate::http::serve(
        listener,
        standby_router(&view),
        standby_stop.clone(),
    ));
    tracing::info!(node = %config.node_name, listen = %config.http.listen, "baton started as a standby; contending for the lease");
    tracing::info!(listen = %bound, "standby answering: /healthz, /readyz, /leader, /metrics; the API redirects to the leader");
    let mut watching = role.clone();
    let _ = systemd.ready();
    let _ = systemd.status(&status_line(&watching.borrow()));
    let term: Term = loop {
        tokio::select! {
            _ = signals.term.recv() => {
                stop_standby(standby_stop, server).await;
                stop_elector().await;
                return Ok(());
            }
            _ = signals.int.recv() => {
                stop_standby(standby_stop, server).await;
                stop_elector().await;
                return Ok(());
            }
            changed = watching.changed() => {
                if changed.is_err() {
                    anyhow::bail!("the elector stopped");
                }
                let now = watching.borrow_and_update().clone();
                let _ = systemd.status(&status_line(&now));
                if let Role::Leader(term) = now {
                    break term;
                }
            }
        }
    };
    stop_standby(standby_stop, server).await;
    tracing::info!(node = %config.node_name, epoch = %term.epoch, "leading: opening the shared store");
    // The files may have changed while this node stood by: lead with what they say now.
    let pipelines = match crate::config::load_pipelines(std::slice::from_ref(&config.pipelines_dir))
    {
        Ok(now) => now,
        Err(diagnostics) => {
            tracing::error!("the pipeline files have problems now; leading with the ones read at start:\n{diagnostics}");
            pipelines
        }
    };

    let fence = Fence {
        node: config.node_name.clone(),
        epoch: term.epoch,
        lease: postgres.lease,
    };
    let store_url = url.clone();
    let store = tokio::task::spawn_blocking(move || PostgresBackend::open(&store_url, Some(fence)))
        .await??;
    let store = Store::with_backend(Box::new(store));
    let gate_role = role.clone();
    let gate = ActingGate::new(move || gate_role.borrow().is_acting(Instant::now()));
    let speed = args.clock.scaled()?.map_or(1.0, |c| c.speed());
    let hold = term
        .resend_after
        .saturating_duration_since(Instant::now())
        .mul_f64(speed);
    let leadership = Leadership {
        socket,
        gate,
        takeover_hold: hold,
        role: role.clone(),
        extra: view.clone(),
    };
    let result = serve_with(config, args, signals, pipelines, store, Some(leadership)).await;
    let deposed = result.as_ref().err().is_some_and(|e| {
        e.chain().any(|cause| {
            cause.is::<NotLeader>()
                || matches!(cause.downcast_ref(), Some(StoreError::Fenced { .. }))
        })
    });
    if deposed || !role.borrow().is_acting(Instant::now()) {
        stop_elector().await;
        anyhow::bail!(
            "this node lost the lease and stopped acting; exiting so that the service manager starts it again as a standby"
        );
    }
    // A clean stop: the loop has drained, so the lease can go at once.
    stop_elector().await;
    result
}

async fn stop_standby(
    stop: CancellationToken,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
) {
    stop.cancel();
    let _ = server.await;
}

/// Cancels `shutdown` as soon as this node may no longer act: the elector stepped down, or the
/// term ran out without a renewal (the elector may be stuck).
pub(super) async fn watch_term(mut role: watch::Receiver<Role>, shutdown: CancellationToken) {
    loop {
        let Some(term) = role.borrow_and_update().term() else {
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
