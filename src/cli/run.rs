//! `baton run --config FILE`: the daemon. Loads config, pipelines and state, then runs the scheduler
//! loop until SIGTERM or SIGINT; SIGHUP reloads the pipeline files.

use crate::clock::{SharedClock, SystemClock};
use crate::config::daemon::{DaemonConfig, ShutdownPolicy};
use crate::config::load_pipelines;
use crate::dbt_cloud::client::{ClientConfig, DbtCloudClient};
use crate::engine::EngineConfig;
use crate::runtime::{Daemon, DaemonHandle, OnShutdown, RuntimeSettings};
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
}

pub fn run(args: &RunArgs) -> ExitCode {
    let config = match DaemonConfig::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(super::EXIT_PROBLEMS);
        }
    };
    crate::logging::init(config.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(config)) {
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

async fn serve(config: DaemonConfig) -> anyhow::Result<()> {
    let clock: SharedClock = Arc::new(SystemClock);
    let pipelines = load_pipelines(std::slice::from_ref(&config.pipelines_dir))
        .map_err(|d| anyhow::anyhow!("the pipeline files have problems:\n{d}"))?;
    let store = Store::open(&config.state_dir)?;
    let client = client(&config, clock.clone())?;
    let daemon = Daemon::new(settings(&config), pipelines, store, client.clone(), clock)
        .context("loading the state")?;
    let handle = daemon.handle();
    let shutdown = CancellationToken::new();
    start_control_api(&config, &handle, client, &shutdown).await?;
    tokio::spawn(watch_signals(
        handle.clone(),
        config.pipelines_dir.clone(),
        shutdown.clone(),
    ));
    tracing::info!(
        pipelines_dir = %config.pipelines_dir.display(),
        state_dir = %config.state_dir.display(),
        "baton started"
    );
    daemon.run(shutdown).await?;
    tracing::info!("baton stopped");
    Ok(())
}

/// The control API (`src/http`) on `http.listen`; refuses a non-loopback address without a token.
async fn start_control_api(
    config: &DaemonConfig,
    handle: &DaemonHandle,
    client: DbtCloudClient,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let token = config.resolve_http_token()?;
    crate::http::check_listen(config.http.listen, token.as_ref()).map_err(anyhow::Error::msg)?;
    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("cannot listen on {} (`http.listen`)", config.http.listen))?;
    let listening = listener.local_addr().unwrap_or(config.http.listen);
    let state = crate::http::AppState::new(handle.clone(), token, Some(client));
    let server = crate::http::serve(listener, crate::http::router(state), shutdown.clone());
    tokio::spawn(async move {
        if let Err(e) = server.await {
            tracing::error!(error = %e, "control API stopped");
        }
    });
    tracing::info!(listen = %listening, "control API listening");
    Ok(())
}

/// SIGTERM and SIGINT stop the daemon; SIGHUP re-reads the pipeline files, keeping the last good
/// definitions when they no longer validate.
async fn watch_signals(handle: DaemonHandle, pipelines_dir: PathBuf, shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => reload(&handle, &pipelines_dir).await,
        }
    }
    tracing::info!(
        "stopping: no new work starts; runs in dbt Cloud are left to the shutdown policy"
    );
    shutdown.cancel();
}

/// Re-reads the pipeline files into the running loop.
pub async fn reload(handle: &DaemonHandle, pipelines_dir: &std::path::Path) {
    match load_pipelines(&[pipelines_dir.to_path_buf()]) {
        Ok(pipelines) => {
            let count = pipelines.len();
            match handle.reload(pipelines).await {
                Ok(Ok(())) => tracing::info!(pipelines = count, "reloaded the pipeline files"),
                Ok(Err(e)) => tracing::error!(error = %e, "reload refused; keeping the last good definitions"),
                Err(e) => tracing::error!(error = %e, "reload failed"),
            }
        }
        Err(diagnostics) => tracing::error!(
            "reload refused, the pipeline files have problems; keeping the last good definitions:\n{diagnostics}"
        ),
    }
}
