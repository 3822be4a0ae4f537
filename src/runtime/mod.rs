//! The imperative shell: the single loop that gives the engine its inputs one step at a time,
//! makes the step's writes durable, then carries out its actions on executor tasks, then answers
//! the operator requests it took; plus shutdown. Only this loop writes state.

pub mod executor;
mod gate;
mod handle;
mod log;

use crate::clock::SharedClock;
use crate::dbt_cloud::client::DbtCloudClient;
use crate::engine::event::{Action, Event, Input, OperatorRequest, Output, ReplyTo, Transition};
use crate::engine::state::{CancelReason, PipelineRunId, Write};
use crate::engine::{Engine, EngineConfig};
use crate::ids::AccountName;
use crate::model::pipeline::Pipeline;
use crate::store::{Durability, Store};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use gate::{ActingGate, NotLeader};
pub use handle::{DaemonHandle, LoopStopped, OperatorResult, Progress, ReloadError};
use handle::{Message, Replier};

/// What to do with runs in dbt Cloud when the daemon stops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnShutdown {
    /// Leave them running; the next start re-attaches to them.
    #[default]
    Detach,
    /// Cancel them and wait (up to the grace period) for dbt Cloud to confirm.
    Cancel,
}

/// Settings of the runtime loop.
#[derive(Debug, Clone)]
pub struct RuntimeSettings {
    pub engine: EngineConfig,
    pub on_shutdown: OnShutdown,
    /// How long shutdown waits for calls in flight (and, with `cancel`, for confirmations).
    pub shutdown_grace: Duration,
    /// The least real time between the end of a turn and a turn taken for executors' answers
    /// alone: under load answers arrive one by one, and a turn (a plan, a commit, the metrics'
    /// read) per answer costs most of the daemon's CPU. Anything else (an operator request, a
    /// webhook hint, a read, a due time) takes its turn at once.
    pub turn_gap: Duration,
}

impl Default for RuntimeSettings {
    fn default() -> Self {
        Self {
            engine: EngineConfig::default(),
            on_shutdown: OnShutdown::Detach,
            shutdown_grace: Duration::from_secs(5),
            turn_gap: DEFAULT_TURN_GAP,
        }
    }
}

/// Long enough to gather the answers of a busy moment, short beside any latency that matters (a
/// webhook's hint is not held at all).
pub const DEFAULT_TURN_GAP: Duration = Duration::from_millis(10);

/// A daemon loop ready to run.
#[derive(Debug)]
pub struct Daemon {
    engine: Engine,
    store: Store,
    /// One client per dbt Cloud account (each with its own token and request budget).
    clients: BTreeMap<AccountName, DbtCloudClient>,
    clock: SharedClock,
    settings: RuntimeSettings,
    inbox_rx: mpsc::UnboundedReceiver<Message>,
    inbox_tx: mpsc::UnboundedSender<Message>,
    progress: watch::Sender<Progress>,
    transitions: broadcast::Sender<Transition>,
    /// The executor tasks carrying out actions.
    tasks: TaskTracker,
    /// Stopping: triggers are no longer sent (they stay `triggering`, reconciled at the next start).
    draining: bool,
    outstanding: usize,
    iterations: u64,
    /// What the next turn gives the engine, in the order it arrived.
    inputs: Vec<Input>,
    /// Who waits for the answer to each operator request in `inputs`.
    repliers: BTreeMap<ReplyTo, Replier>,
    next_reply: u64,
    /// Whether this node may act (it leads); absent for a single node.
    gate: Option<ActingGate>,
    /// Whether this leader has carried out an action yet (logged once).
    acted: bool,
    /// Whether `inputs` holds more than executors' answers (the next turn is not held back).
    urgent: bool,
}

impl Daemon {
    /// Loads the store and prepares the engine: attempts left triggering by a previous process are
    /// reconciled before anything is sent again.
    pub fn new(
        settings: RuntimeSettings,
        pipelines: Vec<Pipeline>,
        store: Store,
        client: DbtCloudClient,
        clock: SharedClock,
    ) -> anyhow::Result<Self> {
        let state = store.load()?;
        let now = clock.now();
        let engine = Engine::new(settings.engine.clone(), pipelines, state, now)?;
        let (inbox_tx, inbox_rx) = mpsc::unbounded_channel();
        let (progress, _) = watch::channel(Progress {
            planned_at: DateTime::<Utc>::MIN_UTC,
            wake_at: Some(now),
            outstanding: 0,
            iterations: 0,
        });
        let (transitions, _) = broadcast::channel(4096);
        Ok(Self {
            engine,
            store,
            clients: BTreeMap::from([(AccountName::default(), client)]),
            clock,
            settings,
            inbox_rx,
            inbox_tx,
            progress,
            transitions,
            tasks: TaskTracker::new(),
            draining: false,
            outstanding: 0,
            iterations: 0,
            inputs: Vec::new(),
            repliers: BTreeMap::new(),
            next_reply: 0,
            gate: None,
            acted: false,
            urgent: false,
        })
    }

    /// Adds the clients of the accounts beside `default` (named by the daemon config's
    /// `accounts:`); each step's calls go to the client of its account.
    pub fn with_accounts(
        mut self,
        accounts: impl IntoIterator<Item = (AccountName, DbtCloudClient)>,
    ) -> Self {
        self.clients.extend(accounts);
        self
    }

    /// Makes every turn and action wait on `gate` (a leader's term still running).
    pub fn with_gate(mut self, gate: ActingGate) -> Self {
        self.gate = Some(gate);
        self
    }

    fn may_act(&self) -> bool {
        self.gate.as_ref().is_none_or(ActingGate::acting)
    }

    pub fn handle(&self) -> DaemonHandle {
        DaemonHandle {
            inbox: self.inbox_tx.clone(),
            progress: self.progress.subscribe(),
            transitions: self.transitions.clone(),
            history: self.store.history_reader(),
        }
    }

    /// Runs until `shutdown` is cancelled, then stops starting work, waits up to the grace period
    /// for calls in flight (cancelling runs first with `on_shutdown: cancel`) and persists.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let tasks = self.tasks.clone();
        let grace = self.settings.shutdown_grace;
        let result = self.run_until(shutdown).await;
        if result.is_err() {
            // Deposed or failed: no call starts after this returns (a deposed leader's executor
            // tasks ask the gate first), so whoever acts next knows when the last one can land;
            // the calls already on the wire end (their answers go nowhere) or are left.
            tasks.close();
            if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
                tracing::warn!(
                    "stepping down with calls to dbt Cloud still in flight; they are left to end"
                );
            }
        }
        result
    }

    async fn run_until(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        'turns: loop {
            let wake_at = self.turn()?;
            let turned = tokio::time::Instant::now();
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                message = self.inbox_rx.recv() => {
                    let Some(message) = message else { break };
                    self.handle_message(message)?;
                    while let Ok(more) = self.inbox_rx.try_recv() {
                        self.handle_message(more)?;
                    }
                }
                _ = sleep_until(&self.clock, wake_at) => {
                    self.inputs.push(Event::Tick.into());
                    self.urgent = true;
                }
            }
            // Answers alone wait for the gap to pass, gathering whatever else arrives meanwhile.
            let held_until = turned + self.settings.turn_gap;
            while !self.urgent && !self.inputs.is_empty() {
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => break 'turns,
                    message = self.inbox_rx.recv() => {
                        let Some(message) = message else { break 'turns };
                        self.handle_message(message)?;
                    }
                    _ = tokio::time::sleep_until(held_until) => break,
                }
            }
        }
        self.shut_down().await
    }

    /// One engine step: make its writes durable, then carry out its actions, then answer the
    /// operator requests it took. Returns when to wake.
    fn turn(&mut self) -> anyhow::Result<Option<DateTime<Utc>>> {
        if !self.may_act() {
            // Deposed: not even a commit (it would be fenced anyway).
            return Err(NotLeader.into());
        }
        let now = self.clock.now();
        let inputs = std::mem::take(&mut self.inputs);
        self.urgent = false;
        // Operator requests are answered once applied, so what they changed is durable at once.
        let operator = inputs.iter().any(|input| {
            matches!(
                input,
                Input::Request { .. } | Input::Event(Event::Operator(_))
            )
        });
        let Output {
            writes,
            actions,
            transitions,
            replies,
            wake_at,
        } = self.engine.step(inputs, now);
        // Durable before any side effect it enables; without actions, a deferred commit (made
        // durable by the next full one) is soon enough, since nothing depends on it yet.
        // Schedule cursors and backfills are committed in full too (rare writes, and a lost
        // skipped tick would come back as a missed one). Only run records without a side
        // effect are deferred: losing them repeats a poll, nothing more.
        let must_be_durable = !actions.is_empty()
            || operator
            || writes
                .iter()
                .any(|w| !matches!(w, Write::Run(_) | Write::Changed(_) | Write::Archive(_)))
            // A late run is announced once: its mark is durable before the notice goes out.
            || transitions
                .iter()
                .any(|t| t.what == crate::engine::event::TransitionKind::PipelineRunLate);
        let durability = if must_be_durable {
            Durability::Full
        } else {
            Durability::Deferred
        };
        // One transaction per turn.
        self.store
            .commit_from(&writes, Some(self.engine.state()), durability)?;
        for transition in transitions {
            log::transition(&transition);
            let _ = self.transitions.send(transition);
        }
        if !actions.is_empty() && !self.may_act() {
            return Err(NotLeader.into());
        }
        if !actions.is_empty() && self.gate.is_some() && !self.acted {
            // The end of a takeover, as operators and the failover test measure it.
            self.acted = true;
            tracing::info!(
                actions = actions.len(),
                "leading: first actions of this term"
            );
        }
        for action in actions {
            if self.draining && matches!(action, Action::Trigger { .. }) {
                // Persisted as triggering; the next start reconciles it and sends it then.
                continue;
            }
            for (account, action) in self.engine.route(action) {
                self.outstanding += 1;
                let client = self.clients.get(&account).cloned();
                let inbox = self.inbox_tx.clone();
                let gate = self.gate.clone();
                self.tasks.spawn(async move {
                    if gate.is_some_and(|gate| !gate.acting()) {
                        let _ = inbox.send(Message::Skipped);
                        return;
                    }
                    let answer = match client {
                        Some(client) => executor::execute(&client, action).await,
                        None => executor::unroutable(action, &account),
                    };
                    let _ = inbox.send(Message::Answer(answer));
                });
            }
        }
        for reply in replies {
            if let Some(replier) = self.repliers.remove(&reply.to) {
                (replier.0)(&self.engine, now, reply.result);
            }
        }
        self.iterations += 1;
        self.progress.send_replace(Progress {
            planned_at: now,
            wake_at,
            outstanding: self.outstanding,
            iterations: self.iterations,
        });
        Ok(wake_at)
    }

    fn handle_message(&mut self, message: Message) -> anyhow::Result<()> {
        match message {
            Message::Answer(event) => {
                self.outstanding = self.outstanding.saturating_sub(1);
                self.inputs.push(event.into());
            }
            Message::External(event) => {
                if let Event::Operator(OperatorRequest::RetryPipelineRun { run }) = &event {
                    self.recall(run);
                }
                self.inputs.push(event.into());
                self.urgent = true;
            }
            Message::Operate(request, replier) => {
                self.urgent = true;
                if let OperatorRequest::RetryPipelineRun { run } = &request {
                    self.recall(run);
                }
                let reply = ReplyTo(self.next_reply);
                self.next_reply += 1;
                self.repliers.insert(reply, replier);
                self.inputs.push(Input::Request { reply, request });
            }
            // Reads and reloads see everything sent before them applied.
            Message::Inspect(read) => {
                self.catch_up()?;
                read(&self.engine, self.clock.now());
            }
            Message::Peek(read) => read(&self.engine, self.clock.now()),
            Message::Reload(pipelines, reply) => {
                self.catch_up()?;
                let _ = reply.send(self.engine.set_pipelines(pipelines));
            }
            Message::SaveResolvedJobs(jobs, reply) => {
                let result = self
                    .store
                    .save_resolved_jobs(&jobs)
                    .map_err(|e| e.to_string());
                let _ = reply.send(result);
            }
            Message::Skipped => self.outstanding = self.outstanding.saturating_sub(1),
        }
        Ok(())
    }

    /// Takes the inputs waiting for the next turn now.
    fn catch_up(&mut self) -> anyhow::Result<()> {
        if !self.inputs.is_empty() {
            self.turn()?;
        }
        Ok(())
    }

    /// Brings an archived run back into memory before a request that needs its whole record.
    fn recall(&mut self, id: &PipelineRunId) {
        if !self.engine.is_archived(id) {
            return;
        }
        match self.store.history_reader().get(id) {
            Some(run) => self.engine.recall(run),
            None => tracing::error!(run = %id, "an archived pipeline run could not be read back"),
        }
    }

    async fn shut_down(mut self) -> anyhow::Result<()> {
        self.tasks.close();
        if !self.may_act() {
            // Deposed: no cancel, no write (the new leader owns both now).
            return Err(NotLeader.into());
        }
        self.draining = true;
        let grace = tokio::time::Instant::now() + self.settings.shutdown_grace;
        if self.settings.on_shutdown == OnShutdown::Cancel {
            self.engine
                .cancel_everything(CancelReason::Shutdown, self.clock.now());
        }
        loop {
            self.turn()?;
            let waiting_for_cancels = self.settings.on_shutdown == OnShutdown::Cancel
                && self.engine.in_flight_attempts() > 0;
            if self.outstanding == 0 && !waiting_for_cancels {
                break;
            }
            let wake = self.progress.borrow().wake_at;
            tokio::select! {
                message = self.inbox_rx.recv() => match message {
                    Some(message) => self.handle_message(message)?,
                    None => break,
                },
                _ = sleep_until(&self.clock, wake) => self.inputs.push(Event::Tick.into()),
                // The regular poll interval (10 s by default) is longer than the grace period:
                // look at the cancelled runs every second until dbt Cloud reports them ended.
                _ = tokio::time::sleep(CANCEL_CONFIRM_INTERVAL), if waiting_for_cancels => {
                    for run in runs_being_cancelled(&self.engine) {
                        self.inputs.push(Event::RunHint { run }.into());
                    }
                }
                _ = tokio::time::sleep_until(grace) => {
                    tracing::warn!(outstanding = self.outstanding, "shutdown grace period over; abandoning calls in flight (triggers are reconciled at the next start)");
                    break;
                }
            }
        }
        // What arrived last is applied and committed; no action is carried out any more.
        let output = self
            .engine
            .step(std::mem::take(&mut self.inputs), self.clock.now());
        self.store
            .commit_from(&output.writes, Some(self.engine.state()), Durability::Full)?;
        for transition in output.transitions {
            log::transition(&transition);
        }
        Ok(())
    }
}

/// How often a shutdown with `on_shutdown: cancel` looks at the runs it cancelled (real time).
const CANCEL_CONFIRM_INTERVAL: Duration = Duration::from_secs(1);

/// dbt Cloud runs of attempts in flight that baton asked to cancel.
fn runs_being_cancelled(engine: &Engine) -> Vec<crate::ids::RunId> {
    engine
        .state()
        .runs
        .values()
        .filter(|run| !run.state.is_terminal())
        .flat_map(|run| run.steps.values())
        .filter_map(|step| step.current())
        .filter(|a| a.is_in_flight() && a.cancel.is_some())
        .filter_map(|a| a.run_id)
        .collect()
}

async fn sleep_until(clock: &SharedClock, at: Option<DateTime<Utc>>) {
    match at {
        Some(at) => clock.sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Starts a daemon loop on the current runtime; returns its handle and the task.
pub fn spawn(
    daemon: Daemon,
    shutdown: CancellationToken,
) -> (DaemonHandle, tokio::task::JoinHandle<anyhow::Result<()>>) {
    let handle = daemon.handle();
    let task = tokio::spawn(daemon.run(shutdown));
    (handle, task)
}
