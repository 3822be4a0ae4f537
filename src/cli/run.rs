//! `baton run --config FILE`: the daemon. Loads config, pipelines and state, then runs the scheduler
//! loop until SIGTERM or SIGINT; SIGHUP reloads the pipeline files; systemd hears READY, RELOADING
//! and STOPPING. Hidden `--clock-*` flags put it on a fast time line shared with `baton emulator`
//! (tests and demos only).

use crate::clock::{ScaledClock, SharedClock, SystemClock};
use crate::config::daemon::{DaemonConfig, ShutdownPolicy};
use crate::config::load_pipelines;
use crate::dbt_cloud::client::{ClientConfig, DbtCloudClient};
use crate::engine::EngineConfig;
use crate::ops::{self, metrics::Metrics, notify, systemd::SdNotifier};
use crate::runtime::{Daemon, DaemonHandle, OnShutdown, ReloadError, RuntimeSettings};
use crate::store::Store;
use anyhow::Context;
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

/// A testing and demo aid, hidden from `--help`: run on a fast time line anchored at a fixed real
/// instant, so that `baton run` and `baton emulator` started with the same values (each as its own
/// process) agree on the time, and a restarted daemon finds the time line where it left it.
/// Never for production: every schedule, timeout and backoff runs `--clock-speed` times faster.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClockArgs {
    /// The real instant (RFC 3339) at which the fast time line reads `--clock-start`.
    #[arg(long, hide = true, requires = "clock_speed")]
    pub clock_epoch: Option<chrono::DateTime<chrono::Utc>>,
    /// How many times faster than real time the time line runs.
    #[arg(long, hide = true, requires = "clock_epoch")]
    pub clock_speed: Option<f64>,
    /// The time the time line reads at `--clock-epoch` (default: the epoch itself).
    #[arg(long, hide = true, requires = "clock_epoch")]
    pub clock_start: Option<chrono::DateTime<chrono::Utc>>,
}

impl ClockArgs {
    /// The anchored scaled clock the flags describe, or `None` when they are absent.
    pub fn scaled(&self) -> anyhow::Result<Option<ScaledClock>> {
        let (Some(epoch), Some(speed)) = (self.clock_epoch, self.clock_speed) else {
            return Ok(None);
        };
        if !(speed.is_finite() && speed > 0.0) {
            anyhow::bail!("--clock-speed must be a number above 0, not {speed}");
        }
        Ok(Some(ScaledClock::anchored(
            epoch,
            self.clock_start.unwrap_or(epoch),
            speed,
        )))
    }

    /// The clock the flags describe, the system clock when they are absent.
    pub fn clock(&self) -> anyhow::Result<SharedClock> {
        Ok(match self.scaled()? {
            Some(scaled) => {
                tracing::warn!(
                    speed = scaled.speed(),
                    "running on a scaled test clock (--clock-epoch): not for production"
                );
                Arc::new(scaled)
            }
            None => Arc::new(SystemClock),
        })
    }
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
    match runtime.block_on(serve(config, args, signals)) {
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

/// A client for the config's account.
pub fn client(config: &DaemonConfig, clock: SharedClock) -> anyhow::Result<DbtCloudClient> {
    let token = config.resolve_token()?;
    let mut client_config = ClientConfig::new(
        config.dbt_cloud.base_url.clone(),
        config.dbt_cloud.account_id,
        token,
    );
    client_config.requests_per_minute = config.dbt_cloud.requests_per_minute;
    client_config.request_timeout = config.dbt_cloud.request_timeout;
    client_config.connect_timeout = config.dbt_cloud.connect_timeout;
    let budget = Arc::new(crate::dbt_cloud::RequestBudget::new(
        client_config.requests_per_minute,
        clock,
    ));
    Ok(DbtCloudClient::with_budget(client_config, budget)?)
}

async fn serve(config: DaemonConfig, args: &RunArgs, signals: Signals) -> anyhow::Result<()> {
    let clock = args.clock.clock()?;
    let pipelines = load_pipelines(std::slice::from_ref(&config.pipelines_dir))
        .map_err(|d| anyhow::anyhow!("the pipeline files have problems:\n{d}"))?;
    let store = Store::open(&config.state_dir)?;
    let client = client(&config, clock.clone())?;
    let mut settings = RuntimeSettings {
        shutdown_grace: args.shutdown_grace,
        ..settings(&config)
    };
    if let Some(poll) = config.webhooks.as_ref().and_then(|w| w.poll_interval) {
        // Webhooks say when to look; polling stays as the slower fallback.
        settings.engine.poll_interval = poll;
    }
    let daemon = Daemon::new(settings, pipelines, store, client.clone(), clock)
        .context("loading the state")?;
    let handle = daemon.handle();
    let shutdown = CancellationToken::new();

    // Subscribed before the loop runs, so they see every transition.
    let metrics = if config.metrics_step_histograms {
        Metrics::with_step_histograms()
    } else {
        Metrics::new()
    };
    metrics.set_budget(client.budget().clone());
    {
        let metrics = metrics.clone();
        client.set_api_observer(Arc::new(move |endpoint, status| {
            metrics.observe_api(endpoint, status)
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

    let api = start_http(&config, &handle, client, metrics, &shutdown).await?;
    let systemd = SdNotifier::from_env();
    tokio::spawn(watch_signals(
        signals,
        handle.clone(),
        config.pipelines_dir.clone(),
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
    if let Some(interval) = ops::systemd::watchdog_interval() {
        tokio::spawn(ops::systemd::watchdog_for(
            systemd.clone(),
            interval,
            handle.clone(),
            shutdown.clone(),
        ));
    }
    daemon.run(shutdown).await?;
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
    metrics: Arc<Metrics>,
    shutdown: &CancellationToken,
) -> anyhow::Result<std::net::SocketAddr> {
    let token = config.resolve_http_token()?;
    crate::http::check_listen(config.http.listen, token.as_ref()).map_err(anyhow::Error::msg)?;
    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("cannot listen on {} (`http.listen`)", config.http.listen))?;
    let listening = listener.local_addr().unwrap_or(config.http.listen);
    let state = crate::http::AppState::new(handle.clone(), token, Some(client));
    let mut app = crate::http::router(state)
        .merge(ops::status_page::router(handle.clone()))
        .merge(ops::metrics::router(metrics.clone()));
    if let Some(secret) = config.resolve_webhook_secret()? {
        let (webhooks, stats) = ops::webhook::router_with_stats(secret, handle.clone());
        metrics.set_webhook_stats(stats);
        app = app.merge(webhooks);
    }
    let server = crate::http::serve(listener, app, shutdown.clone());
    tokio::spawn(async move {
        if let Err(e) = server.await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });
    tracing::info!(listen = %listening, "control API listening, with the status page and /metrics");
    Ok(listening)
}

/// SIGTERM and SIGINT stop the daemon; SIGHUP re-reads the pipeline files, keeping the last good
/// definitions when they no longer validate. systemd hears each.
async fn watch_signals(
    signals: Signals,
    handle: DaemonHandle,
    pipelines_dir: PathBuf,
    systemd: SdNotifier,
    shutdown: CancellationToken,
) {
    let Signals {
        mut term,
        mut int,
        mut hup,
    } = signals;
    let tell = |result: std::io::Result<()>| {
        if let Err(e) = result {
            tracing::warn!(error = %e, "cannot notify systemd");
        }
    };
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                tell(systemd.reloading());
                reload(&handle, &pipelines_dir).await;
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
struct Signals {
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
}

/// Re-reads the pipeline files into the running loop.
pub async fn reload(handle: &DaemonHandle, pipelines_dir: &std::path::Path) {
    match load_pipelines(&[pipelines_dir.to_path_buf()]) {
        Ok(pipelines) => {
            let count = pipelines.len();
            match handle.reload(pipelines).await {
                Ok(()) => tracing::info!(pipelines = count, "reloaded the pipeline files"),
                Err(ReloadError::Refused(e)) => tracing::error!(error = %e, "reload refused; keeping the last good definitions"),
                Err(e @ ReloadError::Stopped(_)) => tracing::error!(error = %e, "reload failed"),
            }
        }
        Err(diagnostics) => tracing::error!(
            "reload refused, the pipeline files have problems; keeping the last good definitions:\n{diagnostics}"
        ),
    }
}
