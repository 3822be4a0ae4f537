//! The imperative shell: the single loop that gives the engine its inputs one step at a time,
//! makes the step's writes durable, then carries out its actions on executor tasks, then answers
//! the operator requests it took; plus shutdown. Only this loop writes state.

pub mod executor;
mod gate;
mod log;

use crate::clock::SharedClock;
use crate::dbt_cloud::client::DbtCloudClient;
use crate::engine::event::{
    Action, Event, Input, OperatorError, OperatorRequest, Outcome, Output, ReplyTo, Transition,
};
use crate::engine::state::{CancelReason, PipelineRunId, Write};
use crate::engine::{Engine, EngineConfig, LoadError};
use crate::ids::AccountName;
use crate::model::pipeline::Pipeline;
use crate::store::{Durability, HistoryReader, Store};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use gate::{ActingGate, NotLeader};

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

/// How far the loop has got: published after every plan, for tests, readiness and the watchdog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// The `now` of the last plan.
    pub planned_at: DateTime<Utc>,
    /// When the loop will next look without being woken by an event.
    pub wake_at: Option<DateTime<Utc>>,
    /// Actions handed to executors and not yet answered.
    pub outstanding: usize,
    pub iterations: u64,
}

type Inspector = Box<dyn FnOnce(&Engine, DateTime<Utc>) + Send>;

/// What an operator request came to, as the engine said.
pub type OperatorResult = Result<Outcome, OperatorError>;

/// Answers an operator request: run inside the loop once the turn that applied it has made its
/// writes durable and handed out its actions, so the answer reads the state as it now stands.
type AnswerFn = dyn FnOnce(&Engine, DateTime<Utc>, OperatorResult) + Send;
struct Replier(Box<AnswerFn>);

impl std::fmt::Debug for Replier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Replier")
    }
}

enum Message {
    /// An executor's answer to an action.
    Answer(Event),
    /// An operator request or a webhook hint.
    External(Event),
    /// A read of the engine's state, run inside the loop so it is consistent.
    Inspect(Inspector),
    /// A read of the engine's state as the last turn left it (inputs waiting stay waiting).
    Peek(Inspector),
    /// An operator request whose answer is awaited.
    Operate(OperatorRequest, Replier),
    /// New pipeline definitions (reload).
    Reload(Vec<Pipeline>, oneshot::Sender<Result<(), LoadError>>),
    /// The job ids job names resolved to, to store (after a reload's resolution).
    SaveResolvedJobs(ResolvedJobs, oneshot::Sender<Result<(), String>>),
    /// An action not carried out: this node stopped leading before it was sent.
    Skipped,
}

type ResolvedJobs = BTreeMap<String, crate::ids::JobId>;

/// Talks to a running daemon loop.
#[derive(Debug, Clone)]
pub struct DaemonHandle {
    inbox: mpsc::UnboundedSender<Message>,
    progress: watch::Receiver<Progress>,
    transitions: broadcast::Sender<Transition>,
    history: HistoryReader,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Answer(e) | Self::External(e) => write!(f, "{e:?}"),
            Self::Inspect(_) => f.write_str("Inspect"),
            Self::Peek(_) => f.write_str("Peek"),
            Self::Operate(request, _) => write!(f, "Operate({request:?})"),
            Self::Reload(p, _) => write!(f, "Reload({} pipelines)", p.len()),
            Self::SaveResolvedJobs(j, _) => write!(f, "SaveResolvedJobs({} jobs)", j.len()),
            Self::Skipped => f.write_str("Skipped"),
        }
    }
}

/// The loop stopped; requests to it go nowhere.
#[derive(Debug, thiserror::Error)]
#[error("the scheduler loop is not running")]
pub struct LoopStopped;

/// Why new pipeline definitions were not taken.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The engine refused them; the last good definitions stay in force.
    #[error("reload refused: {0}")]
    Refused(#[from] LoadError),
    #[error(transparent)]
    Stopped(#[from] LoopStopped),
}

impl DaemonHandle {
    /// Sends an operator request or a webhook hint to the loop.
    pub fn send(&self, event: Event) -> Result<(), LoopStopped> {
        self.inbox
            .send(Message::External(event))
            .map_err(|_| LoopStopped)
    }

    /// Runs `read` against the engine inside the loop and returns its answer.
    pub async fn inspect<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Engine, DateTime<Utc>) -> T + Send + 'static,
    ) -> Result<T, LoopStopped> {
        let (tx, rx) = oneshot::channel();
        self.inbox
            .send(Message::Inspect(Box::new(move |engine, now| {
                let _ = tx.send(read(engine, now));
            })))
            .map_err(|_| LoopStopped)?;
        rx.await.map_err(|_| LoopStopped)
    }

    /// Runs `read` against the engine as the last turn left it, without first applying what waits
    /// for the next turn (executors' answers held by `turn_gap`): for readers that follow the
    /// transitions, which report whatever those answers change in their own time (the metrics).
    pub async fn peek<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Engine, DateTime<Utc>) -> T + Send + 'static,
    ) -> Result<T, LoopStopped> {
        let (tx, rx) = oneshot::channel();
        self.inbox
            .send(Message::Peek(Box::new(move |engine, now| {
                let _ = tx.send(read(engine, now));
            })))
            .map_err(|_| LoopStopped)?;
        rx.await.map_err(|_| LoopStopped)
    }

    /// Sends an operator request through the loop in one trip: the engine carries it out or
    /// refuses it, and once that turn's writes are durable `answer` reads the outcome against the
    /// state as it then stands. An `Ok` outcome survives a crash.
    pub async fn operate<T: Send + 'static>(
        &self,
        request: OperatorRequest,
        answer: impl FnOnce(&Engine, DateTime<Utc>, OperatorResult) -> T + Send + 'static,
    ) -> Result<T, LoopStopped> {
        let (tx, rx) = oneshot::channel();
        let replier = Replier(Box::new(move |engine, now, result| {
            let _ = tx.send(answer(engine, now, result));
        }));
        self.inbox
            .send(Message::Operate(request, replier))
            .map_err(|_| LoopStopped)?;
        rx.await.map_err(|_| LoopStopped)
    }

    /// Replaces the pipeline definitions; runs in flight keep theirs.
    pub async fn reload(&self, pipelines: Vec<Pipeline>) -> Result<(), ReloadError> {
        let (tx, rx) = oneshot::channel();
        self.inbox
            .send(Message::Reload(pipelines, tx))
            .map_err(|_| LoopStopped)?;
        Ok(rx.await.map_err(|_| LoopStopped)??)
    }

    /// Stores the job ids job names resolved to; the loop writes them (only it writes state).
    pub async fn save_resolved_jobs(
        &self,
        jobs: ResolvedJobs,
    ) -> Result<Result<(), String>, LoopStopped> {
        let (tx, rx) = oneshot::channel();
        self.inbox
            .send(Message::SaveResolvedJobs(jobs, tx))
            .map_err(|_| LoopStopped)?;
        rx.await.map_err(|_| LoopStopped)
    }

    /// Reads archived runs (finished runs no longer in the engine's memory) from the store,
    /// outside the loop; only the loop writes.
    pub fn history(&self) -> &HistoryReader {
        &self.history
    }

    pub fn progress(&self) -> watch::Receiver<Progress> {
        self.progress.clone()
    }

    /// Every transition from now on (for the demo's live view, metrics and notifications).
    pub fn transitions(&self) -> broadcast::Receiver<Transition> {
        self.transitions.subscribe()
    }

    /// Waits until the loop has planned at or after `at` (or has nothing due by then) with no call
    /// to dbt Cloud outstanding: the event tests wait on instead of sleeping.
    pub async fn settled(&self, at: DateTime<Utc>) -> Result<Progress, LoopStopped> {
        let done = |p: &Progress| {
            p.outstanding == 0 && (p.planned_at >= at || p.wake_at.is_none_or(|w| w > at))
        };
        let mut rx = self.progress.clone();
        loop {
            let p = *rx.borrow_and_update();
            if done(&p) {
                // Whatever was sent to the loop before this call is handled before the Inspect;
                // the loop plans again right after it, and that plan must still be quiet.
                self.inspect(|_, _| ()).await?;
                rx.changed().await.map_err(|_| LoopStopped)?;
                let after = *rx.borrow_and_update();
                if done(&after) {
                    return Ok(after);
                }
                continue;
            }
            rx.changed().await.map_err(|_| LoopStopped)?;
        }
    }
}

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
