//! A faithful local dbt Cloud (Administrative API v2) for tests, benchmarks and demos: the same
//! wire types as the client, a lifecycle driven by a `Clock`, fault injection and webhooks.
//!
//! `Emulator::start` serves on a listener the caller binds (port 0 in tests) until the shutdown
//! token is cancelled; the returned `EmulatorHandle` shows what the emulator saw and did.
//!
//! Code map: `scenario` (the YAML file), `state` + `run` (runs and the operations on them),
//! `lifecycle` (what moves when), `routes` (path to endpoint), `handlers` + `lists` +
//! `trigger_body` (HTTP), `query` (query-string spellings), `render` (JSON as the real API writes
//! it), `artifacts`, `faults`, `webhooks`, `cli` (`baton emulator`).
//!
//! Requests are counted (`EmulatorHandle::request_counts`, `GET /_emulator/requests`) under the
//! route names of `routes::Route::name`: `trigger_run`, `rerun_job`, `list_runs`, `get_run`,
//! `cancel_run`, `list_artifacts`, `get_artifact`, `get_step`, `get_job`, `list_jobs`,
//! `run_failure_details`, `retry_run`, plus `not_found` and `control`. Control endpoints (same
//! token): `GET`/`PUT /_emulator/faults` (a `Faults` as JSON), `GET /_emulator/requests`,
//! `GET /_emulator/runs`.

mod artifacts;
pub mod faults;
mod handlers;
mod lifecycle;
mod lists;
pub mod query;
mod render;
pub mod routes;
mod run;
pub mod scenario;
pub mod state;
mod trigger_body;
pub mod webhooks;

pub use faults::Faults;
pub use scenario::{Outcome, Scenario};
pub use webhooks::DeliveryRecord;

use crate::clock::SharedClock;
use crate::dbt_cloud::wire::{RunStatus, TriggerRequest};
use crate::ids::{AccountId, JobId, RunId};
use crate::secret::Secret;
use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::SeedableRng;
use state::World;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Namespace of the emulator's entry point.
#[derive(Debug)]
pub struct Emulator;

/// One run as the emulator recorded it, for tests to check what a client really did.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RecordedRun {
    pub id: RunId,
    pub job_id: JobId,
    pub cause: String,
    /// The trigger body received (for a rerun from failure, the resumed run's body).
    pub request: TriggerRequest,
    pub created_at: DateTime<Utc>,
    /// The instant the run became terminal (10, 20 or 30), on the emulator's clock; none while
    /// it is not.
    pub finished_at: Option<DateTime<Utc>>,
    pub status: RunStatus,
    /// Created through `jobs/{id}/rerun/` or `runs/{id}/retry/`.
    pub via_rerun: bool,
    /// The failed run this one resumed from its failed step, when it did.
    pub resumed_from: Option<RunId>,
    /// The HTTP status the creating request was answered with (502 under the trigger fault).
    pub answered_status: u16,
}

/// State shared by the HTTP handlers, the lifecycle task and the handle.
#[derive(Debug)]
pub(crate) struct Shared {
    world: Mutex<World>,
    clock: SharedClock,
    faults: Mutex<Faults>,
    fault_rng: Mutex<StdRng>,
    counts: Mutex<BTreeMap<(String, u16), u64>>,
    base_url: String,
    href_base: String,
    account_id: AccountId,
    token: Secret,
    /// Wakes the lifecycle task when a request changed what happens next.
    wake: Notify,
    webhooks: webhooks::Dispatcher,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    /// Runs `f` on the world brought up to the clock's now, then sends the webhooks it caused.
    pub(crate) fn with_world<R>(&self, f: impl FnOnce(&mut World, DateTime<Utc>) -> R) -> R {
        let result = self.with_world_quietly(f);
        self.wake.notify_one();
        result
    }

    /// As `with_world`, without waking the lifecycle task (which calls this itself).
    fn with_world_quietly<R>(&self, f: impl FnOnce(&mut World, DateTime<Utc>) -> R) -> R {
        let mut world = lock(&self.world);
        let now = world.present(self.clock.now());
        world.advance(now);
        let result = f(&mut world, now);
        let events = std::mem::take(&mut world.outbox);
        for event in events {
            self.webhooks.enqueue(&world, event);
        }
        drop(world);
        result
    }

    fn count(&self, route: &str, status: u16) {
        *lock(&self.counts)
            .entry((route.to_string(), status))
            .or_default() += 1;
    }

    fn recorded_runs(&self) -> Vec<RecordedRun> {
        self.with_world(|world, _| {
            world
                .runs
                .values()
                .map(|r| RecordedRun {
                    id: r.id,
                    job_id: r.job_id,
                    cause: r.request.cause.clone(),
                    request: r.request.clone(),
                    created_at: r.created_at,
                    finished_at: r.finished_at,
                    status: r.status,
                    via_rerun: r.via_rerun,
                    resumed_from: r.resumes,
                    answered_status: r.answered_status,
                })
                .collect()
        })
    }
}

/// A running emulator: where it listens and what it has seen.
#[derive(Debug, Clone)]
pub struct EmulatorHandle {
    shared: Arc<Shared>,
    tracker: TaskTracker,
}

impl Emulator {
    /// Serves on `listener` until `shutdown` is cancelled. `clock` drives every run's lifecycle.
    pub async fn start(
        scenario: Scenario,
        clock: SharedClock,
        listener: tokio::net::TcpListener,
        shutdown: CancellationToken,
    ) -> anyhow::Result<EmulatorHandle> {
        let addr = listener.local_addr()?;
        let base_url = format!("http://{addr}");
        let href_base = scenario
            .href_base
            .clone()
            .unwrap_or_else(|| base_url.clone());
        let tracker = TaskTracker::new();
        let webhooks =
            webhooks::Dispatcher::start(&scenario.webhooks, scenario.seed, &tracker, &shutdown);
        let shared = Arc::new(Shared {
            faults: Mutex::new(scenario.faults.clone()),
            fault_rng: Mutex::new(StdRng::seed_from_u64(scenario.seed.wrapping_add(1))),
            counts: Mutex::new(BTreeMap::new()),
            account_id: scenario.account_id,
            token: scenario.token.clone(),
            world: Mutex::new(World::new(scenario, clock.now())),
            clock,
            base_url,
            href_base,
            wake: Notify::new(),
            webhooks,
        });
        let app = axum::Router::new()
            .fallback(handlers::handle)
            .with_state(shared.clone());
        let server_shutdown = shutdown.clone();
        tracker.spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(server_shutdown.cancelled_owned())
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "emulator server stopped");
            }
        });
        tracker.spawn(drive_lifecycle(shared.clone(), shutdown));
        tracker.close();
        Ok(EmulatorHandle { shared, tracker })
    }
}

/// Sleeps on the clock until the next transition (or until a request changes the plan), then
/// brings the world up to date so that webhooks go out on time even when nobody polls.
async fn drive_lifecycle(shared: Arc<Shared>, shutdown: CancellationToken) {
    loop {
        let next = lock(&shared.world).next_event_at();
        let sleep = async {
            match next {
                Some(at) => shared.clock.sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = shared.wake.notified() => {}
            _ = sleep => {}
        }
        shared.with_world_quietly(|_, _| ());
    }
}

impl EmulatorHandle {
    /// `http://127.0.0.1:PORT`, without `/api/v2`.
    pub fn base_url(&self) -> String {
        self.shared.base_url.clone()
    }

    pub fn account_id(&self) -> AccountId {
        self.shared.account_id
    }

    /// The token the scenario accepts.
    pub fn token(&self) -> String {
        self.shared.token.expose().to_string()
    }

    /// Every run ever created, oldest first, with its status now.
    pub fn runs(&self) -> Vec<RecordedRun> {
        self.shared.recorded_runs()
    }

    /// Replaces the fault settings while running.
    pub fn set_faults(&self, faults: Faults) {
        *lock(&self.shared.faults) = faults;
    }

    pub fn faults(&self) -> Faults {
        lock(&self.shared.faults).clone()
    }

    /// Changes how the job's later runs end.
    pub fn set_outcome(&self, job: JobId, outcome: Outcome) -> anyhow::Result<()> {
        self.shared
            .with_world(|world, _| world.set_outcome(job, outcome))
            .map_err(|e| anyhow::anyhow!("job {job}: {e}"))
    }

    /// Gives a job a new id (the old one is gone), as recreating it in dbt Cloud does.
    pub fn recreate_job(&self, job: JobId, new_id: JobId) -> anyhow::Result<()> {
        self.shared
            .with_world(|world, _| world.recreate_job(job, new_id))
            .map_err(|e| anyhow::anyhow!("job {job}: {e}"))
    }

    /// Requests answered so far, by route name (`routes::Route::name`) and HTTP status.
    pub fn request_counts(&self) -> BTreeMap<(String, u16), u64> {
        lock(&self.shared.counts).clone()
    }

    /// Every webhook delivery finished so far (delivered or given up).
    pub fn webhook_deliveries(&self) -> Vec<DeliveryRecord> {
        self.shared.webhooks.records()
    }

    /// Waits until every webhook delivery queued so far has been delivered or given up.
    pub async fn wait_until_idle(&self) {
        self.shared.with_world(|_, _| ());
        self.shared.webhooks.wait_until_idle().await;
    }

    /// Waits until the server and the emulator's tasks have stopped after shutdown.
    pub async fn stopped(&self) {
        self.tracker.wait().await;
    }
}
