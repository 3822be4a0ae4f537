//! `baton bench`: measures the daemon against the emulator, both run as processes of this same
//! executable on 127.0.0.1, and reports each figure beside the target set for it (issue 9).
//!
//! One file per scenario: `dispatch` (upstream terminal to downstream trigger, polling and
//! webhooks), `dispatch_predicted` (the same when polling predicts each run's end), `requests`
//! (dbt Cloud API requests per finished attempt), `load` (CPU and peak RSS for 10,000 pipelines
//! on a fast clock), `restart` (restart-to-resumed over a store of a million finished attempts),
//! `validate` (10,000 pipeline files), `pages` (the status pages' render time), `failover` (an HA
//! leader SIGKILLed to the new leader's trigger of a due step). Shared parts: `process`
//! (spawning, time line, HTTP), `procfs` (/proc sampling), `generate` (scenarios and pipeline
//! files), `postgres` (a throwaway PostgreSQL cluster, which the tests use too), `output` (table
//! and JSON line).

mod dispatch;
mod dispatch_predicted;
mod failover;
pub mod generate;
mod load;
pub mod output;
mod pages;
pub mod postgres;
pub mod process;
pub mod procfs;
mod requests;
mod restart;
mod validate;

use output::Report;
use process::{EmulatorProcess, Reaped, Scratch, TimeLine, Workspace};
use std::path::Path;
use std::time::Duration;

/// The scenarios, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Scenario {
    /// Upstream terminal to downstream trigger, p50 and p99, polling only and with webhooks.
    Dispatch,
    /// Upstream terminal to downstream trigger when polling predicts each run's end (10 s
    /// interval, durations ±10 %), and the API requests it costs.
    #[value(name = "dispatch_predicted")]
    DispatchPredicted,
    /// dbt Cloud API requests per finished attempt at three concurrency levels.
    Requests,
    /// Daemon CPU and peak RSS for 10,000 pipelines of 5 steps on a fast clock.
    Load,
    /// Restart to resumed with 1,000 attempts in flight and 1,000,000 finished in the store.
    Restart,
    /// `baton validate` over 10,000 pipeline files.
    Validate,
    /// Status pages rendered daemon side: the front page for 10,000 pipelines, a pipeline page of
    /// 50 steps and 30 runs.
    Pages,
    /// Two HA nodes on a throwaway PostgreSQL: the leader SIGKILLed with runs in flight and a
    /// tick due, to the new leader's trigger of the due step.
    Failover,
}

impl Scenario {
    pub const ALL: [Scenario; 8] = [
        Scenario::Dispatch,
        Scenario::DispatchPredicted,
        Scenario::Requests,
        Scenario::Load,
        Scenario::Restart,
        Scenario::Validate,
        Scenario::Pages,
        Scenario::Failover,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Dispatch => "dispatch",
            Scenario::DispatchPredicted => "dispatch_predicted",
            Scenario::Requests => "requests",
            Scenario::Load => "load",
            Scenario::Restart => "restart",
            Scenario::Validate => "validate",
            Scenario::Pages => "pages",
            Scenario::Failover => "failover",
        }
    }
}

/// How big and what to keep.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Small sizes: seconds instead of minutes (the figures then say little).
    pub quick: bool,
    /// Keep the scratch directories (configs, logs, stores) and print where they are.
    pub keep: bool,
}

/// Runs the scenarios in order; one that fails is recorded and the others still run.
pub async fn run(options: Options, scenarios: &[Scenario]) -> Report {
    let mut report = Report::default();
    for &scenario in scenarios {
        eprintln!("bench: {} ...", scenario.name());
        let began = std::time::Instant::now();
        let result = match scenario {
            Scenario::Dispatch => dispatch::run(options, &mut report).await,
            Scenario::DispatchPredicted => dispatch_predicted::run(options, &mut report).await,
            Scenario::Requests => requests::run(options, &mut report).await,
            Scenario::Load => load::run(options, &mut report).await,
            Scenario::Restart => restart::run(options, &mut report).await,
            Scenario::Validate => validate::run(options, &mut report).await,
            Scenario::Pages => pages::run(options, &mut report).await,
            Scenario::Failover => failover::run(options, &mut report).await,
        };
        match result {
            Ok(()) => eprintln!(
                "bench: {} done in {:.1}s",
                scenario.name(),
                began.elapsed().as_secs_f64()
            ),
            Err(e) => {
                eprintln!("bench: {} failed: {e:#}", scenario.name());
                report
                    .failures
                    .push((scenario.name().to_string(), format!("{e:#}")));
            }
        }
    }
    report
}

/// An emulator and a daemon on one time line, the daemon's control API answering.
struct Pair {
    emulator: EmulatorProcess,
    workspace: Workspace,
    daemon: Reaped,
    /// `http://127.0.0.1:PORT` of the daemon.
    api: String,
}

/// Starts the emulator on `scenario`, writes the daemon's workspace (control API on `port`, `extra`
/// config lines, pipelines by `write_pipelines`), starts the daemon and waits until it listens.
async fn start_pair(
    scratch: &Scratch,
    scenario: &str,
    time: &TimeLine,
    port: u16,
    extra: &str,
    write_pipelines: impl FnOnce(&Path) -> anyhow::Result<()>,
) -> anyhow::Result<Pair> {
    let scenario_path = scratch.join("bench.scenario.yaml");
    std::fs::write(&scenario_path, scenario)?;
    let emulator = EmulatorProcess::start(&scenario_path, time, &scratch.join("emulator.log"))?;
    let workspace = Workspace::new(&scratch.path, &emulator, port, extra)?;
    write_pipelines(&workspace.pipelines_dir)?;
    let mut daemon = workspace.start_daemon(time)?;
    let api = workspace
        .api_address(&mut daemon, 0, Duration::from_secs(120))
        .await?;
    Ok(Pair {
        emulator,
        workspace,
        daemon,
        api,
    })
}

/// Milliseconds between two instants of a time line.
fn millis(from: chrono::DateTime<chrono::Utc>, to: chrono::DateTime<chrono::Utc>) -> f64 {
    (to - from).num_microseconds().unwrap_or(i64::MAX) as f64 / 1000.0
}
