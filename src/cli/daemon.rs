//! `baton run --config FILE`: the daemon. Loads config, pipelines and state, then runs the scheduler
//! loop until SIGTERM or SIGINT; SIGHUP reloads the pipeline files; systemd hears READY, RELOADING
//! and STOPPING. Hidden `--clock-*` flags put it on a fast time line shared with `baton emulator`
//! (tests and demos only).

use crate::clock::{ClockArgs, SharedClock};
use crate::config::daemon::{DaemonConfig, ShutdownPolicy};
use crate::config::load_pipelines;
use crate::config::store::StoreConfig;
use crate::dbt_cloud::client::{ClientConfig, DbtCloudClient};
use crate::dbt_cloud::job_names::resolve_job_names;
use crate::engine::EngineConfig;
use crate::ids::AccountName;
use crate::ops::metrics::{ExtraFamilies, Metrics};
use crate::ops::{self, notify, systemd::SdNotifier};
use crate::runtime::{ActingGate, Daemon, DaemonHandle, OnShutdown, ReloadError, RuntimeSettings};
use crate::store::Store;
use anyhow::Context;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The daemon's config file.
    #[arg(long, short)]
    pub config: PathBuf,
    /// How long a stopping daemon waits for calls in flight and, with `on_shutdown: cancel`, for
    /// dbt Cloud to confirm its cancels, before it exits anyway (a trigger abandoned then is
    /// reconciled at the next start).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    pub shutdown_grace: std::time::Duration,
    #[command(flatten)]
    pub clock: ClockArgs,
}

pub fn run(args: &RunArgs) -> ExitCode {
    // The runtime first, then the signal handlers, then everything else: a SIGTERM during
    // start-up must stop the daemon cleanly, not kill it with the default disposition.
    let runtime = match super::common::runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let signals = match runtime.block_on(async { Signals::install() }) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let config = match DaemonConfig::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(super::EXIT_PROBLEMS);
        }
    };
    crate::logging::init(config.log_format);
    match runtime.block_on(async { serve(config, args, signals.requests()).await }) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runtime settings from the daemon's config.
pub fn settings(config: &DaemonConfig) -> RuntimeSettings {
    RuntimeSettings {
        engine: EngineConfig {
            poll_interval: config.poll_interval,
            max_in_flight: config.max_in_flight,
            catchup_max: config.catchup_max,
            history_retention: config.history_retention,
            // Webhooks say when a run ends; polling is then only the fallback.
            predict_polls: config.webhooks.is_none(),
            ..EngineConfig::default()
        },
        on_shutdown: match config.on_shutdown {
            ShutdownPolicy::Detach => OnShutdown::Detach,
            ShutdownPolicy::Cancel => OnShutdown::Cancel,
        },
        ..RuntimeSettings::default()
    }
}

/// A client for the config's `default` account.
pub fn client(config: &DaemonConfig, clock: SharedClock) -> anyhow::Result<DbtCloudClient> {
    account_client(&config.dbt_cloud, clock)
}

/// A client for one account, with its own token and request budget.
pub fn account_client(
    account: &crate::config::daemon::DbtCloudConfig,
    clock: SharedClock,
) -> anyhow::Result<DbtCloudClient> {
    let token = account.token.resolve()?;
    let mut client_config = ClientConfig::new(account.base_url.clone(), account.account_id, token);
    client_config.requests_per_minute = account.requests_per_minute;
    client_config.request_timeout = account.request_timeout;
    client_config.connect_timeout = account.connect_timeout;
    let budget = Arc::new(crate::dbt_cloud::RequestBudget::new(
        client_config.requests_per_minute,
        clock,
    ));
    Ok(DbtCloudClient::with_budget(client_config, budget)?)
}

async fn serve(config: DaemonConfig, args: &RunArgs, signals: NodeSignals) -> anyhow::Result<()> {
    let pipelines = load_pipelines(std::slice::from_ref(&config.pipelines_dir))
        .map_err(|d| anyhow::anyhow!("the pipeline files have problems:\n{d}"))?;
    crate::config::accounts::check_accounts(&pipelines, &config.account_names())
        .map_err(|d| anyhow::anyhow!("the pipeline files have problems:\n{d}"))?;
    match config.store.clone() {
        StoreConfig::Local => {
            let store = Store::open(&config.state_dir)?;
            serve_with(config, args, signals, pipelines, store, None).await
        }
        StoreConfig::Postgres(postgres) => {
            super::run_ha::serve(config, args, signals, pipelines, &postgres).await
        }
    }
}

/// What the leader of an HA deployment adds to a single node's daemon.
pub(super) struct Leadership {
    /// The API's socket, bound by the standby part already.
    pub socket: std::net::TcpListener,
    /// Asked before every action: the leader's term is still running.
    pub gate: ActingGate,
    /// How long attempts the previous leader left triggering wait (clock time).
    pub takeover_hold: std::time::Duration,
    /// This node's role; the loop stops as soon as it may no longer act in term `epoch`.
    pub role: tokio::sync::watch::Receiver<crate::ha::Role>,
    pub epoch: crate::ha::Epoch,
    /// `/leader` and the leadership metrics.
    pub extra: super::run_ha::RoleView,
}

/// What the HTTP server of an HA deployment's leader adds: `/leader` and the leadership metrics,
/// the role line on the status page, and the socket the standby part bound.
pub(super) struct NodeHttp {
    routes: axum::Router,
    note: ops::status_page::Note,
    readiness: crate::http::NodeRole,
    socket: std::net::TcpListener,
}

/// The daemon over an opened store: a single node, or the leader of an HA deployment.
pub(super) async fn serve_with(
    config: DaemonConfig,
    args: &RunArgs,
    signals: NodeSignals,
    pipelines: Vec<crate::model::pipeline::Pipeline>,
    store: Store,
    leadership: Option<Leadership>,
) -> anyhow::Result<()> {
    let mut pipelines = pipelines;
    let clock = args.clock.clock()?;
    let client = client(&config, clock.clone())?;
    let mut others = Vec::new();
    for (name, account) in &config.accounts {
        let other =
            account_client(account, clock.clone()).with_context(|| format!("account `{name}`"))?;
        others.push((name.clone(), other));
    }
    let clients: BTreeMap<AccountName, DbtCloudClient> =
        std::iter::once((AccountName::default(), client.clone()))
            .chain(others.iter().cloned())
            .collect();
    // Job names resolve before anything is scheduled; the ids are stored for the next start.
    let stored = store.resolved_jobs()?;
    let resolved = resolve_job_names(&clients, &mut pipelines, &stored)
        .await
        .map_err(|problems| {
            anyhow::anyhow!(
                "job names could not be resolved:\n  {}",
                problems.join("\n  ")
            )
        })?;
    // A start (or an HA node's term) that found the same ids writes nothing: on PostgreSQL that
    // write is a fenced transaction of its own.
    if resolved != stored {
        store.save_resolved_jobs(&resolved)?;
    }
    let mut settings = RuntimeSettings {
        shutdown_grace: args.shutdown_grace,
        ..settings(&config)
    };
    if let Some(poll) = config.webhooks.as_ref().and_then(|w| w.poll_interval) {
        // Webhooks say when to look; polling stays as the slower fallback.
        settings.engine.poll_interval = poll;
    }
    if let Some(l) = &leadership {
        settings.engine.takeover_hold = l.takeover_hold;
    }
    let mut daemon = Daemon::new(settings, pipelines, store, client.clone(), clock)
        .context("loading the state")?
        .with_accounts(others.clone());
    let shutdown = CancellationToken::new();
    if let Some(l) = &leadership {
        daemon = daemon.with_gate(l.gate.clone());
        tokio::spawn(super::run_ha::watch_term(
            l.role.clone(),
            l.epoch,
            shutdown.clone(),
        ));
    }
    let handle = daemon.handle();

    // Subscribed before the loop runs, so they see every transition.
    let metrics = if config.metrics_step_histograms {
        Metrics::with_step_histograms()
    } else {
        Metrics::new()
    };
    if let Some(l) = &leadership {
        let view = l.extra.clone();
        metrics.set_extra(ExtraFamilies(Arc::new(move || view.metrics())));
    }
    let every_client = std::iter::once((crate::ids::AccountName::default(), &client))
        .chain(others.iter().map(|(name, c)| (name.clone(), c)));
    for (account, c) in every_client {
        metrics.set_account_budget(&account.0, c.budget().clone());
        let metrics = metrics.clone();
        c.set_api_observer(Arc::new(move |endpoint, status| {
            metrics.observe_account_api(&account.0, endpoint, status)
        }));
    }
    tokio::spawn(metrics.clone().run(handle.clone(), shutdown.clone()));
    if !config.notifications.is_empty() {
        let targets = config
            .notifications
            .iter()
            .map(notify::Target::from_config)
            .collect::<Result<Vec<_>, _>>()?;
        let notifier = notify::Notifier::new(targets, notify::DeliverySettings::default())?;
        tokio::spawn(notifier.run(handle.clone(), shutdown.clone()));
    }

    let node = leadership
        .as_ref()
        .map(|l| -> anyhow::Result<NodeHttp> {
            Ok(NodeHttp {
                routes: l.extra.router(),
                note: l.extra.note(),
                readiness: l.extra.readiness(),
                socket: l.socket.try_clone()?,
            })
        })
        .transpose()?;
    let (api, server) =
        start_http(&config, &handle, client, others, metrics, node, &shutdown).await?;
    let systemd = SdNotifier::from_env();
    let reloader = Reloader {
        pipelines_dir: config.pipelines_dir.clone(),
        accounts: config.account_names(),
        clients,
        resolved: Arc::new(tokio::sync::Mutex::new(resolved)),
    };
    tokio::spawn(watch_signals(
        signals,
        handle.clone(),
        reloader,
        systemd.clone(),
        shutdown.clone(),
    ));
    tracing::info!(
        pipelines_dir = %config.pipelines_dir.display(),
        state_dir = %config.state_dir.display(),
        api = %api,
        "baton started"
    );
    if let Err(e) = systemd.ready_listening(api) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
    if leadership.is_some() {
        let _ = systemd.status(&format!("leader; scheduling; API on http://{api}"));
    }
    if let Some(interval) = ops::systemd::watchdog_interval() {
        tokio::spawn(ops::systemd::watchdog_for(
            systemd.clone(),
            interval,
            handle.clone(),
            shutdown.clone(),
        ));
    }
    let result = daemon.run(shutdown.clone()).await;
    // Everything this run started ends with it: a leader that goes back to standby hands the
    // API's socket back only once its server no longer accepts on it.
    shutdown.cancel();
    let grace = args.shutdown_grace.max(std::time::Duration::from_secs(1));
    let mut server = server;
    if tokio::time::timeout(grace, &mut server).await.is_err() {
        server.abort();
        let _ = server.await;
    }
    result?;
    tracing::info!("baton stopped");
    Ok(())
}

/// The HTTP server on `http.listen`: the control API (which refuses a non-loopback address
/// without a token), and beside it the status page, `/metrics` and, when configured, the webhook
/// receiver (dbt Cloud signs its deliveries; Prometheus scrapes without a token). Returns the
/// address it listens on.
async fn start_http(
    config: &DaemonConfig,
    handle: &DaemonHandle,
    client: DbtCloudClient,
    others: Vec<(AccountName, DbtCloudClient)>,
    metrics: Arc<Metrics>,
    node: Option<NodeHttp>,
    shutdown: &CancellationToken,
) -> anyhow::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
    let token = config.resolve_http_token()?;
    crate::http::check_listen(config.http.listen, token.as_ref()).map_err(anyhow::Error::msg)?;
    let (node_routes, note, socket, readiness) = match node {
        Some(n) => (
            Some(n.routes),
            Some(n.note),
            Some(n.socket),
            Some(n.readiness),
        ),
        None => (None, None, None, None),
    };
    let listener = match socket {
        Some(socket) => tokio::net::TcpListener::from_std(socket)?,
        None => tokio::net::TcpListener::bind(config.http.listen)
            .await
            .with_context(|| format!("cannot listen on {} (`http.listen`)", config.http.listen))?,
    };
    let listening = listener.local_addr().unwrap_or(config.http.listen);
    let mut state =
        crate::http::AppState::new(handle.clone(), token, Some(client)).with_accounts(others);
    if let Some(readiness) = readiness {
        state = state.with_node_role(readiness);
    }
    let mut app = crate::http::router(state)
        .merge(match &note {
            Some(note) => ops::status_page::router_with_note(handle.clone(), note.clone()),
            None => ops::status_page::router(handle.clone()),
        })
        .merge(ops::metrics::router(metrics.clone()));
    if let Some(extra) = node_routes {
        app = app.merge(extra);
    }
    if let Some(secret) = config.resolve_webhook_secret()? {
        let (webhooks, stats) = ops::webhook::router_with_stats(secret, handle.clone());
        metrics.set_webhook_stats(stats);
        app = app.merge(webhooks);
    }
    for (name, account) in &config.accounts {
        if let Some(secret) = &account.webhook_secret {
            let path = ops::webhook::account_path(name);
            let (webhooks, _) = ops::webhook::router_at(&path, secret.resolve()?, handle.clone());
            app = app.merge(webhooks);
        }
    }
    let server = crate::http::serve(listener, app, shutdown.clone());
    let server = tokio::spawn(async move {
        if let Err(e) = server.await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });
    tracing::info!(listen = %listening, "control API listening, with the status page and /metrics");
    Ok((listening, server))
}

/// SIGTERM and SIGINT stop the daemon; SIGHUP re-reads the pipeline files, keeping the last good
/// definitions when they no longer validate. systemd hears each. Ends without a word when the run
/// ends otherwise (a leader going back to standby).
async fn watch_signals(
    signals: NodeSignals,
    handle: DaemonHandle,
    reloader: Reloader,
    systemd: SdNotifier,
    shutdown: CancellationToken,
) {
    let tell = |result: std::io::Result<()>| {
        if let Err(e) = result {
            tracing::warn!(error = %e, "cannot notify systemd");
        }
    };
    loop {
        tokio::select! {
            _ = signals.stop.cancelled() => break,
            _ = shutdown.cancelled() => return,
            _ = signals.reload.notified() => {
                tell(systemd.reloading());
                reloader.reload(&handle).await;
                tell(systemd.ready());
            }
        }
    }
    tell(systemd.stopping());
    tracing::info!(
        "stopping: no new work starts; runs in dbt Cloud are left to the shutdown policy"
    );
    shutdown.cancel();
}

/// The daemon's signal streams; a signal that arrives once they exist waits in them.
pub(super) struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        let context = "cannot install the signal handlers";
        Ok(Self {
            term: signal(SignalKind::terminate()).context(context)?,
            int: signal(SignalKind::interrupt()).context(context)?,
            hup: signal(SignalKind::hangup()).context(context)?,
        })
    }

    /// What the signals ask for, readable by every part of the process for as long as it lives
    /// (an HA node runs the scheduler more than once). Call inside the runtime.
    fn requests(self) -> NodeSignals {
        let requests = NodeSignals {
            stop: CancellationToken::new(),
            reload: Arc::new(tokio::sync::Notify::new()),
        };
        let Signals {
            mut term,
            mut int,
            mut hup,
        } = self;
        let forward = requests.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = term.recv() => break,
                    _ = int.recv() => break,
                    _ = hup.recv() => forward.reload.notify_one(),
                }
            }
            forward.stop.cancel();
        });
        requests
    }
}

/// What SIGTERM/SIGINT (`stop`, for good) and SIGHUP (`reload`) ask of the process.
#[derive(Clone, Debug)]
pub(super) struct NodeSignals {
    pub(super) stop: CancellationToken,
    pub(super) reload: Arc<tokio::sync::Notify>,
}

/// What a reload needs: the files, the accounts, their clients (to resolve job names) and the
/// ids job names last resolved to (they stand in when dbt Cloud cannot be asked).
#[derive(Debug)]
pub struct Reloader {
    pub pipelines_dir: PathBuf,
    pub accounts: BTreeSet<AccountName>,
    pub clients: BTreeMap<AccountName, DbtCloudClient>,
    pub resolved: Arc<tokio::sync::Mutex<BTreeMap<String, crate::ids::JobId>>>,
}

impl Reloader {
    /// Re-reads the pipeline files, checks their accounts and resolves their job names, then
    /// hands them to the running loop; any problem keeps the last good definitions.
    pub async fn reload(&self, handle: &DaemonHandle) {
        let loaded = load_pipelines(std::slice::from_ref(&self.pipelines_dir))
            .and_then(|p| crate::config::accounts::check_accounts(&p, &self.accounts).map(|()| p));
        let mut pipelines = match loaded {
            Ok(p) => p,
            Err(diagnostics) => {
                tracing::error!("reload refused, the pipeline files have problems; keeping the last good definitions:\n{diagnostics}");
                return;
            }
        };
        let mut resolved = self.resolved.lock().await;
        let ids = match resolve_job_names(&self.clients, &mut pipelines, &resolved).await {
            Ok(ids) => ids,
            Err(problems) => {
                tracing::error!(
                    "reload refused, job names could not be resolved; keeping the last good definitions:\n  {}",
                    problems.join("\n  ")
                );
                return;
            }
        };
        let count = pipelines.len();
        match handle.reload(pipelines).await {
            Ok(()) => tracing::info!(pipelines = count, "reloaded the pipeline files"),
            Err(ReloadError::Refused(e)) => {
                tracing::error!(error = %e, "reload refused; keeping the last good definitions");
                return;
            }
            Err(e @ ReloadError::Stopped(_)) => {
                tracing::error!(error = %e, "reload failed");
                return;
            }
        }
        if ids != *resolved {
            match handle.save_resolved_jobs(ids.clone()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "cannot store the resolved job ids"),
                Err(e) => tracing::error!(error = %e, "cannot store the resolved job ids"),
            }
            *resolved = ids;
        }
    }
}
