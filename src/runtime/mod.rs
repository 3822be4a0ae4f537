//! The imperative shell: the single loop that feeds events to the engine, makes its writes durable,
//! then carries out its actions on executor tasks; plus shutdown. Only this loop writes state.

pub mod executor;
mod log;

use crate::clock::SharedClock;
use crate::dbt_cloud::client::DbtCloudClient;
use crate::engine::event::{Action, Event, OperatorRequest, Transition};
use crate::engine::state::{CancelReason, PipelineRunId, Write};
use crate::engine::{Engine, EngineConfig};
use crate::model::pipeline::Pipeline;
use crate::store::{Durability, HistoryReader, Store};
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

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
}

impl Default for RuntimeSettings {
    fn default() -> Self {
        Self {
            engine: EngineConfig::default(),
            on_shutdown: OnShutdown::Detach,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

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

enum Message {
    /// An executor's answer to an action.
    Answer(Event),
    /// An operator request or a webhook hint.
    External(Event),
    /// A read of the engine's state, run inside the loop so it is consistent.
    Inspect(Inspector),
    /// New pipeline definitions (reload).
    Reload(Vec<Pipeline>, oneshot::Sender<Result<(), String>>),
    /// An action not carried out: this node stopped leading before it was sent.
    Skipped,
}

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
            Self::Reload(p, _) => write!(f, "Reload({} pipelines)", p.len()),
            Self::Skipped => f.write_str("Skipped"),
        }
    }
}

/// The loop stopped; requests to it go nowhere.
#[derive(Debug, thiserror::Error)]
#[error("the scheduler loop is not running")]
pub struct LoopStopped;

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

    /// Replaces the pipeline definitions; runs in flight keep theirs.
    pub async fn reload(
        &self,
        pipelines: Vec<Pipeline>,
    ) -> Result<Result<(), String>, LoopStopped> {
        let (tx, rx) = oneshot::channel();
        self.inbox
            .send(Message::Reload(pipelines, tx))
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
    client: DbtCloudClient,
    clock: SharedClock,
    settings: RuntimeSettings,
    inbox_rx: mpsc::UnboundedReceiver<Message>,
    inbox_tx: mpsc::UnboundedSender<Message>,
    progress: watch::Sender<Progress>,
    transitions: broadcast::Sender<Transition>,
    outstanding: usize,
    iterations: u64,
    /// An operator request was applied since the last flush.
    operator_pending: bool,
    /// Whether this node may act (it leads); absent for a single node.
    gate: Option<ActingGate>,
}

/// Asked before every action and before a shutdown acts: false once this node no longer leads
/// (HA on PostgreSQL), so a deposed leader sends nothing more.
#[derive(Clone)]
pub struct ActingGate(Arc<dyn Fn() -> bool + Send + Sync>);

impl ActingGate {
    pub fn new(acting: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        Self(Arc::new(acting))
    }

    pub fn acting(&self) -> bool {
        (self.0)()
    }
}

impl std::fmt::Debug for ActingGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ActingGate(acting: {})", self.acting())
    }
}

/// The loop stopped because this node no longer leads: it sent nothing after noticing.
#[derive(Debug, thiserror::Error)]
#[error("this node is no longer the leader: it stopped acting")]
pub struct NotLeader;

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
            client,
            clock,
            settings,
            inbox_rx,
            inbox_tx,
            progress,
            transitions,
            outstanding: 0,
            iterations: 0,
            operator_pending: false,
            gate: None,
        })
    }

    /// Makes every action wait on `gate` (a leader's term still running).
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
    pub async fn run(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let tracker = TaskTracker::new();
        loop {
            let wake_at = self.step(&tracker, false)?;
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                message = self.inbox_rx.recv() => {
                    let Some(message) = message else { break };
                    self.handle_message(message);
                    while let Ok(more) = self.inbox_rx.try_recv() {
                        self.handle_message(more);
                    }
                }
                _ = sleep_until(&self.clock, wake_at) => {
                    self.engine.apply(Event::Tick, self.clock.now());
                }
            }
        }
        self.shut_down(&tracker).await
    }

    /// One plan: persist, then act. Returns when to wake.
    fn step(
        &mut self,
        tracker: &TaskTracker,
        draining: bool,
    ) -> anyhow::Result<Option<DateTime<Utc>>> {
        if !self.may_act() {
            // Deposed: not even a commit (it would be fenced anyway).
            return Err(NotLeader.into());
        }
        let now = self.clock.now();
        let plan = self.engine.plan(now);
        // Durable before any side effect it enables; without actions, a deferred commit (made
        // durable by the next full one) is soon enough, since nothing depends on it yet.
        // Operator requests are answered once applied, so what they changed is flushed too, and
        // so are schedule cursors and backfills (rare writes, and a lost skipped tick would come
        // back as a missed one). Only run records without a side effect wait for the next
        // flush: losing them repeats a poll, nothing more.
        let writes = self.engine.take_writes();
        let must_be_durable = !plan.actions.is_empty()
            || std::mem::take(&mut self.operator_pending)
            || writes
                .iter()
                .any(|w| !matches!(w, Write::Run(_) | Write::Archive(_)));
        let durability = if must_be_durable {
            Durability::Full
        } else {
            Durability::Deferred
        };
        // One transaction per turn.
        self.store.commit_with(&writes, durability)?;
        for transition in self.engine.take_transitions() {
            log::transition(&transition);
            let _ = self.transitions.send(transition);
        }
        if !plan.actions.is_empty() && !self.may_act() {
            return Err(NotLeader.into());
        }
        for action in plan.actions {
            if draining && matches!(action, Action::Trigger { .. }) {
                // Persisted as triggering; the next start reconciles it and sends it then.
                continue;
            }
            self.outstanding += 1;
            let client = self.client.clone();
            let inbox = self.inbox_tx.clone();
            let gate = self.gate.clone();
            tracker.spawn(async move {
                if gate.is_some_and(|gate| !gate.acting()) {
                    let _ = inbox.send(Message::Skipped);
                    return;
                }
                let answer = executor::execute(&client, action).await;
                let _ = inbox.send(Message::Answer(answer));
            });
        }
        self.iterations += 1;
        self.progress.send_replace(Progress {
            planned_at: now,
            wake_at: plan.wake_at,
            outstanding: self.outstanding,
            iterations: self.iterations,
        });
        Ok(plan.wake_at)
    }

    fn handle_message(&mut self, message: Message) {
        let now = self.clock.now();
        match message {
            Message::Answer(event) => {
                self.outstanding = self.outstanding.saturating_sub(1);
                self.engine.apply(event, now);
            }
            Message::External(event) => {
                self.operator_pending |= matches!(event, Event::Operator(_));
                if let Event::Operator(OperatorRequest::RetryPipelineRun { run }) = &event {
                    self.recall(run);
                }
                self.engine.apply(event, now)
            }
            Message::Inspect(read) => read(&self.engine, now),
            Message::Skipped => self.outstanding = self.outstanding.saturating_sub(1),
            Message::Reload(pipelines, reply) => {
                let result = self
                    .engine
                    .set_pipelines(pipelines)
                    .map_err(|e| e.to_string());
                let _ = reply.send(result);
            }
        }
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

    async fn shut_down(mut self, tracker: &TaskTracker) -> anyhow::Result<()> {
        tracker.close();
        if !self.may_act() {
            // Deposed: no cancel, no write (the new leader owns both now).
            return Err(NotLeader.into());
        }
        let grace = tokio::time::Instant::now() + self.settings.shutdown_grace;
        if self.settings.on_shutdown == OnShutdown::Cancel {
            self.engine
                .cancel_everything(CancelReason::Shutdown, self.clock.now());
        }
        loop {
            self.step(tracker, true)?;
            let waiting_for_cancels = self.settings.on_shutdown == OnShutdown::Cancel
                && self.engine.in_flight_attempts() > 0;
            if self.outstanding == 0 && !waiting_for_cancels {
                break;
            }
            let wake = self.progress.borrow().wake_at;
            tokio::select! {
                message = self.inbox_rx.recv() => match message {
                    Some(message) => self.handle_message(message),
                    None => break,
                },
                _ = sleep_until(&self.clock, wake) => {
                    self.engine.apply(Event::Tick, self.clock.now());
                }
                // The regular poll interval (10 s by default) is longer than the grace period:
                // look at the cancelled runs every second until dbt Cloud reports them ended.
                _ = tokio::time::sleep(CANCEL_CONFIRM_INTERVAL), if waiting_for_cancels => {
                    let now = self.clock.now();
                    for run in runs_being_cancelled(&self.engine) {
                        self.engine.apply(Event::RunHint { run }, now);
                    }
                }
                _ = tokio::time::sleep_until(grace) => {
                    tracing::warn!(outstanding = self.outstanding, "shutdown grace period over; abandoning calls in flight (triggers are reconciled at the next start)");
                    break;
                }
            }
        }
        self.store.commit(&self.engine.take_writes())?;
        for transition in self.engine.take_transitions() {
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
