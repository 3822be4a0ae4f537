//! `baton emulator`: serves a scenario on a port, optionally with time running N times faster.

use crate::clock::{ScaledClock, SharedClock, SystemClock};
use crate::emulator::{Emulator, Scenario};
use anyhow::Context;
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Arguments of `baton emulator`.
#[derive(Debug, Clone, clap::Args)]
pub struct EmulatorArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8089")]
    pub listen: String,
    /// The scenario file (YAML): account, token, jobs and their behaviour.
    #[arg(long)]
    pub scenario: PathBuf,
    /// Runs scenario time N times faster than real time.
    #[arg(long, conflicts_with = "clock_epoch")]
    pub speed: Option<f64>,
    /// Testing aid: the fast time line shared with `baton run` (see `baton run`'s clock flags).
    #[command(flatten)]
    pub clock: crate::clock::ClockArgs,
}

impl EmulatorArgs {
    /// Runs the emulator until Ctrl-C or SIGTERM; returns the process exit code.
    pub fn execute(self) -> std::process::ExitCode {
        // Every request is logged at debug level: `RUST_LOG=baton=debug baton emulator ...`.
        crate::logging::init(crate::config::daemon::LogFormat::Pretty);
        super::common::block_on(async { Ok(self.serve().await?) })
    }

    async fn serve(self) -> anyhow::Result<()> {
        let scenario = Scenario::from_file(&self.scenario)?;
        let clock: SharedClock = match (self.clock.scaled()?, self.speed) {
            (Some(anchored), _) => Arc::new(anchored),
            (None, speed) => match speed {
                Some(speed) if speed > 0.0 && speed != 1.0 => Arc::new(ScaledClock::new(speed)),
                Some(speed) if speed <= 0.0 => {
                    anyhow::bail!("--speed must be above 0, not {speed}")
                }
                _ => Arc::new(SystemClock),
            },
        };
        let listener = tokio::net::TcpListener::bind(&self.listen)
            .await
            .with_context(|| format!("cannot listen on {}", self.listen))?;
        let shutdown = CancellationToken::new();
        let handle = Emulator::start(scenario, clock, listener, shutdown.clone()).await?;
        // A reader that went away (a test that only wanted the URL) must not stop the emulator.
        {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "baton emulator listening on {}", handle.base_url());
            let _ = writeln!(out, "account id: {}", handle.account_id());
            let _ = writeln!(out, "token: {}", handle.token());
            let _ = writeln!(out, "API base URL: {}/api/v2/", handle.base_url());
            let _ = out.flush();
        }
        wait_for_signal().await;
        shutdown.cancel();
        handle.stopped().await;
        Ok(())
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
