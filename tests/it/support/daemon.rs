//! Test harness: the real daemon loop, the real client and a temporary SQLite state directory, against the
//! in-process emulator over loopback HTTP, all on one manual clock.

#![allow(dead_code, clippy::unwrap_used)]

use super::t;
use baton::clock::{Clock, ManualClock, SharedClock};
use baton::config::load_pipeline_str;
use baton::dbt_cloud::client::{ClientConfig, DbtCloudClient};
use baton::dbt_cloud::RequestBudget;
use baton::emulator::{Emulator, EmulatorHandle, RecordedRun, Scenario};
use baton::engine::state::{PipelineRun, PipelineRunId};
use baton::engine::EngineConfig;
use baton::model::pipeline::Pipeline;
use baton::runtime::{Daemon, DaemonHandle, RuntimeSettings};
use baton::secret::Secret;
use baton::store::Store;
use chrono::{DateTime, Duration, Utc};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub struct Harness {
    pub clock: ManualClock,
    pub emulator: EmulatorHandle,
    pub daemon: DaemonHandle,
    pub state_dir: tempfile::TempDir,
    pub settings: RuntimeSettings,
    pipelines: Vec<Pipeline>,
    emulator_shutdown: CancellationToken,
    daemon_shutdown: CancellationToken,
    daemon_task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

pub fn pipeline(yaml: &str) -> Pipeline {
    load_pipeline_str("test.yaml", yaml).unwrap_or_else(|d| panic!("{d}"))
}

pub fn settings() -> RuntimeSettings {
    RuntimeSettings {
        engine: EngineConfig {
            poll_interval: std::time::Duration::from_secs(10),
            reconcile_delay: std::time::Duration::from_secs(5),
            ..EngineConfig::default()
        },
        ..RuntimeSettings::default()
    }
}

impl Harness {
    pub async fn start(start: &str, scenario_yaml: &str, pipelines: Vec<Pipeline>) -> Self {
        Self::start_with(start, scenario_yaml, pipelines, settings()).await
    }

    pub async fn start_with(
        start: &str,
        scenario_yaml: &str,
        pipelines: Vec<Pipeline>,
        settings: RuntimeSettings,
    ) -> Self {
        let clock = ManualClock::new(t(start));
        let shared: SharedClock = Arc::new(clock.clone());
        let scenario = Scenario::from_yaml_str(scenario_yaml).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let emulator_shutdown = CancellationToken::new();
        let emulator = Emulator::start(scenario, shared, listener, emulator_shutdown.clone())
            .await
            .unwrap();
        let state_dir = tempfile::tempdir().unwrap();
        let (daemon, daemon_shutdown, task) =
            launch(&clock, &emulator, state_dir.path(), &settings, &pipelines);
        Self {
            clock,
            emulator,
            daemon,
            state_dir,
            settings,
            pipelines,
            emulator_shutdown,
            daemon_shutdown,
            daemon_task: Some(task),
        }
    }

    pub fn client(&self) -> DbtCloudClient {
        client(&self.clock, &self.emulator)
    }

    fn start_daemon(&mut self) {
        let (daemon, shutdown, task) = launch(
            &self.clock,
            &self.emulator,
            self.state_dir.path(),
            &self.settings,
            &self.pipelines,
        );
        self.daemon = daemon;
        self.daemon_shutdown = shutdown;
        self.daemon_task = Some(task);
    }

    /// Stops the daemon (as SIGTERM would) and starts a new one on the same state directory.
    pub async fn restart(&mut self, pipelines: Option<Vec<Pipeline>>) {
        self.stop().await;
        if let Some(p) = pipelines {
            self.pipelines = p;
        }
        self.start_daemon();
    }

    pub async fn stop(&mut self) {
        self.daemon_shutdown.cancel();
        if let Some(task) = self.daemon_task.take() {
            task.await.unwrap().unwrap();
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Lets the daemon finish everything due now.
    pub async fn settle(&self) {
        self.daemon.settled(self.clock.now()).await.unwrap();
    }

    /// Moves time forward in steps of `step` seconds until `until`, letting the daemon catch up at
    /// each step.
    pub async fn run_until(&self, until: DateTime<Utc>, step: i64) {
        self.settle().await;
        while self.clock.now() < until {
            let next = (self.clock.now() + Duration::seconds(step)).min(until);
            self.clock.set(next);
            self.settle().await;
        }
    }

    pub async fn run_for(&self, seconds: i64, step: i64) {
        let until = self.clock.now() + Duration::seconds(seconds);
        self.run_until(until, step).await;
    }

    /// Every pipeline run, in memory or archived.
    pub async fn pipeline_runs(&self) -> Vec<PipelineRun> {
        let mut runs: Vec<PipelineRun> = self
            .daemon
            .inspect(|engine, _| engine.state().runs.values().cloned().collect())
            .await
            .unwrap();
        let history = self.daemon.history().all();
        let in_memory: std::collections::BTreeSet<_> = runs.iter().map(|r| r.id.clone()).collect();
        runs.extend(history.into_iter().filter(|r| !in_memory.contains(&r.id)));
        runs
    }

    pub async fn pipeline_run(&self, id: &str) -> PipelineRun {
        let id = PipelineRunId(id.to_string());
        let key = id.clone();
        self.daemon
            .inspect(move |engine, _| engine.state().runs.get(&key).cloned())
            .await
            .unwrap()
            .or_else(|| self.daemon.history().get(&id))
            .unwrap_or_else(|| panic!("no pipeline run"))
    }

    /// The emulator's record of the runs of one job.
    pub fn runs_of(&self, job: i64) -> Vec<RecordedRun> {
        self.emulator
            .runs()
            .into_iter()
            .filter(|r| r.job_id.0 == job)
            .collect()
    }

    pub async fn shutdown(mut self) {
        self.stop().await;
        self.emulator_shutdown.cancel();
    }
}

/// A client of the emulator's account on the test's clock, with a budget no test exhausts.
pub fn client(clock: &ManualClock, emulator: &EmulatorHandle) -> DbtCloudClient {
    let mut config = ClientConfig::new(
        emulator.base_url().parse().unwrap(),
        emulator.account_id(),
        Secret::new(emulator.token()),
    );
    config.request_timeout = std::time::Duration::from_secs(5);
    let clock: SharedClock = Arc::new(clock.clone());
    let budget = Arc::new(RequestBudget::new(1_000_000, clock));
    DbtCloudClient::with_budget(config, budget).unwrap()
}

type Launched = (
    DaemonHandle,
    CancellationToken,
    tokio::task::JoinHandle<anyhow::Result<()>>,
);

fn launch(
    clock: &ManualClock,
    emulator: &EmulatorHandle,
    state_dir: &std::path::Path,
    settings: &RuntimeSettings,
    pipelines: &[Pipeline],
) -> Launched {
    let store = Store::open(state_dir).unwrap();
    let shared: SharedClock = Arc::new(clock.clone());
    let daemon = Daemon::new(
        settings.clone(),
        pipelines.to_vec(),
        store,
        client(clock, emulator),
        shared,
    )
    .unwrap();
    let shutdown = CancellationToken::new();
    let (handle, task) = baton::runtime::spawn(daemon, shutdown.clone());
    (handle, shutdown, task)
}
