//! How the rest of the daemon talks to the loop: `DaemonHandle` (reads, operator requests,
//! reloads, the transition stream, progress) and the messages it puts in the loop's inbox.

use crate::engine::event::{Event, OperatorError, OperatorRequest, Outcome, Transition};
use crate::engine::{Engine, LoadError};
use crate::model::pipeline::Pipeline;
use crate::store::HistoryReader;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

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

pub(super) type Inspector = Box<dyn FnOnce(&Engine, DateTime<Utc>) + Send>;

/// What an operator request came to, as the engine said.
pub type OperatorResult = Result<Outcome, OperatorError>;

/// Answers an operator request: run inside the loop once the turn that applied it has made its
/// writes durable and handed out its actions, so the answer reads the state as it now stands.
type AnswerFn = dyn FnOnce(&Engine, DateTime<Utc>, OperatorResult) + Send;
pub(super) struct Replier(pub(super) Box<AnswerFn>);

impl std::fmt::Debug for Replier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Replier")
    }
}

pub(super) enum Message {
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

pub(super) type ResolvedJobs = BTreeMap<String, crate::ids::JobId>;

/// Talks to a running daemon loop.
#[derive(Debug, Clone)]
pub struct DaemonHandle {
    pub(super) inbox: mpsc::UnboundedSender<Message>,
    pub(super) progress: watch::Receiver<Progress>,
    pub(super) transitions: broadcast::Sender<Transition>,
    pub(super) history: HistoryReader,
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
