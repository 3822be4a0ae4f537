//! The engine's vocabulary with the outside world: events it is fed, actions it asks for, and the
//! transitions it reports for logs and metrics.

use super::state::{
    AttemptKey, AttemptRef, BackfillId, BackfillState, FailureDetails, PipelineRunId,
    PipelineRunState, Reprocess, Write,
};
use crate::dbt_cloud::wire::{Run, TriggerRequest};
use crate::ids::{JobId, RunId};
use crate::model::pipeline::{PipelineName, StepName};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::time::Duration;

/// Everything that can change the scheduler's state. The runtime loop feeds these in one at a time.
#[derive(Debug, Clone)]
pub enum Event {
    /// Time passed; nothing else happened.
    Tick,
    /// What became of a trigger (or rerun) POST.
    Triggered {
        attempt: AttemptRef,
        result: TriggerResult,
    },
    /// The job's recent runs were searched for the attempt's key.
    Reconciled {
        attempt: AttemptRef,
        /// The run whose `trigger.cause` carries the key, if any.
        found: Option<Box<Run>>,
    },
    /// The search for the attempt's key failed; try again later.
    ReconcileFailed {
        attempt: AttemptRef,
        message: String,
    },
    /// A poll returned these runs (every run asked for, or a subset if some failed).
    RunsSeen { runs: Vec<Run> },
    /// The poll could not reach dbt Cloud; the next poll tick tries again.
    PollFailed { message: String },
    /// dbt Cloud acknowledged a cancel; the run in the answer is applied like a poll result.
    CancelAcknowledged { attempt: AttemptRef, run: Box<Run> },
    CancelFailed {
        attempt: AttemptRef,
        message: String,
    },
    /// A verified webhook says this run changed: look at it now instead of at the next poll tick.
    RunHint { run: RunId },
    /// An operator request from the HTTP API.
    Operator(OperatorRequest),
    /// What was learnt about why an attempt's run failed.
    FailureDetails {
        attempt: AttemptRef,
        fetch: DetailsFetch,
    },
}

/// What a trigger POST came to.
#[derive(Debug, Clone)]
pub enum TriggerResult {
    /// dbt Cloud created the run.
    Accepted(Box<Run>),
    /// dbt Cloud definitely refused and will not accept it later either (4xx but 408 and 429).
    Rejected { message: String },
    /// dbt Cloud definitely did not create a run, but may later (429, or no connection made).
    NotSent {
        message: String,
        retry_after: Option<Duration>,
    },
    /// The run may or may not exist (timeout, 5xx, connection lost after sending).
    Ambiguous { message: String },
}

/// Requests an operator makes through the API or CLI. `Engine::operate` carries one out or says
/// why not (`OperatorError`); nothing changes on a refusal.
#[derive(Debug, Clone)]
pub enum OperatorRequest {
    TriggerPipeline {
        pipeline: PipelineName,
        /// Absent: now.
        logical_date: Option<OperatorDate>,
    },
    CancelPipelineRun {
        run: PipelineRunId,
    },
    RetryPipelineRun {
        run: PipelineRunId,
    },
    Pause {
        pipeline: PipelineName,
    },
    Resume {
        pipeline: PipelineName,
    },
    CreateBackfill {
        id: BackfillId,
        request: BackfillRequest,
    },
    /// The dates a backfill would run, with their trigger bodies; changes nothing (a dry run).
    PreviewBackfill {
        id: BackfillId,
        request: BackfillRequest,
    },
    CancelBackfill {
        id: BackfillId,
    },
}

/// A date as an operator gave it: an instant, or text read in the pipeline's time zone
/// (`2026-03-01`, `2026-03-01T02:00`, `2026-03-01T02:00:00Z`; see `operator::parse_when`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperatorDate {
    At(DateTime<Utc>),
    Text(String),
}

impl From<DateTime<Utc>> for OperatorDate {
    fn from(at: DateTime<Utc>) -> Self {
        Self::At(at)
    }
}

/// A backfill as an operator asks for it, its dates not yet read in the pipeline's zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackfillRequest {
    pub pipeline: PipelineName,
    pub from: OperatorDate,
    /// Included; a bare day means its last second.
    pub to: OperatorDate,
    pub every: Option<Duration>,
    pub max_active: u32,
    pub reprocess: Reprocess,
    /// Whether the pipeline's `deadline` applies to these runs.
    pub deadline: bool,
}

/// What an operator request came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    RunCreated(PipelineRunId),
    RunCancelled(PipelineRunId),
    RunRetried(PipelineRunId),
    Paused(PipelineName),
    Resumed(PipelineName),
    BackfillCreated(BackfillId),
    BackfillPreviewed(Vec<PreviewDate>),
    BackfillCancelled(BackfillId),
}

/// Why the engine refused an operator request, worded for the operator.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OperatorError {
    #[error("no pipeline named `{0}` is loaded")]
    UnknownPipeline(PipelineName),
    #[error("no pipeline run `{0}`")]
    UnknownRun(PipelineRunId),
    #[error("no backfill `{0}`")]
    UnknownBackfill(BackfillId),
    /// A date the operator wrote that is not one.
    #[error("{0}")]
    BadDate(String),
    #[error(
        "pipeline run {run} exists already ({state:?}); to run it again use `baton retry {run}` \
         (if it failed) or give another logical date"
    )]
    RunExists {
        run: PipelineRunId,
        state: PipelineRunState,
    },
    #[error(
        "not started: the previous run {active} is still active and the pipeline's concurrency \
         policy is `skip`; cancel it (`baton cancel {active}`) or wait"
    )]
    SkippedWhileActive { active: PipelineRunId },
    #[error("pipeline run {run} is already over ({state:?}); nothing to cancel")]
    RunOver {
        run: PipelineRunId,
        state: PipelineRunState,
    },
    #[error("only a failed or cancelled pipeline run can be retried; {run} is {state:?}")]
    NotRetryable {
        run: PipelineRunId,
        state: PipelineRunState,
    },
    #[error("backfill {backfill} is already over ({})", state.name())]
    BackfillOver {
        backfill: BackfillId,
        state: BackfillState,
    },
    #[error("backfill refused: {0}")]
    BackfillRefused(BackfillError),
}

/// Runs read per batched poll request: the most dbt Cloud returns in one page.
pub const POLL_PAGE: usize = 100;

/// Side effects the engine asks the runtime to carry out, after the state that justifies them is
/// durable.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Ask dbt Cloud for a run. For a rerun, the executor first checks that `failed_run` is still
    /// the job's latest run and falls back to a full trigger otherwise.
    Trigger {
        attempt: AttemptRef,
        job: JobId,
        request: Box<TriggerRequest>,
        rerun_of: Option<RunId>,
    },
    /// Find the run the attempt may have created: the newest runs of the job whose cause carries
    /// `key` (or, for a rerun, which carry no cause, a run of the job newer than `rerun_of`).
    Reconcile {
        attempt: AttemptRef,
        job: JobId,
        key: AttemptKey,
        rerun_of: Option<RunId>,
    },
    /// Look at these runs (batched per `POLL_PAGE` by the executor).
    Poll {
        runs: Vec<RunId>,
    },
    Cancel {
        attempt: AttemptRef,
        run: RunId,
    },
    /// Fetch the failed step, its log tail and `run_results.json` of a run that ended in error.
    FetchFailureDetails {
        attempt: AttemptRef,
        run: RunId,
    },
}

/// A state change worth a log line and a metric.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub at: DateTime<Utc>,
    pub pipeline: PipelineName,
    pub run: Option<PipelineRunId>,
    pub step: Option<String>,
    pub attempt: Option<u32>,
    pub dbt_run: Option<RunId>,
    pub href: Option<String>,
    pub what: TransitionKind,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransitionKind {
    PipelineRunCreated,
    PipelineRunStarted,
    PipelineRunSucceeded,
    PipelineRunFailed,
    PipelineRunCancelled,
    /// The run's deadline passed before it succeeded (once per run).
    PipelineRunLate,
    TickSkipped,
    TicksMissed,
    StepTriggering,
    StepTriggered,
    StepStatus,
    StepSucceeded,
    StepFailed,
    StepRetryScheduled,
    StepUpstreamFailed,
    StepCancelled,
    CancelRequested,
    TriggerAmbiguous,
    TriggerAdopted,
    TriggerResent,
    UnknownStatus,
    BackfillCreated,
    BackfillFinished,
}

impl TransitionKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::PipelineRunCreated => "pipeline_run_created",
            Self::PipelineRunStarted => "pipeline_run_started",
            Self::PipelineRunSucceeded => "pipeline_run_succeeded",
            Self::PipelineRunFailed => "pipeline_run_failed",
            Self::PipelineRunCancelled => "pipeline_run_cancelled",
            Self::PipelineRunLate => "pipeline_run_late",
            Self::TickSkipped => "tick_skipped",
            Self::TicksMissed => "ticks_missed",
            Self::StepTriggering => "step_triggering",
            Self::StepTriggered => "step_triggered",
            Self::StepStatus => "step_status",
            Self::StepSucceeded => "step_succeeded",
            Self::StepFailed => "step_failed",
            Self::StepRetryScheduled => "step_retry_scheduled",
            Self::StepUpstreamFailed => "step_upstream_failed",
            Self::StepCancelled => "step_cancelled",
            Self::CancelRequested => "cancel_requested",
            Self::TriggerAmbiguous => "trigger_ambiguous",
            Self::TriggerAdopted => "trigger_adopted",
            Self::TriggerResent => "trigger_resent",
            Self::UnknownStatus => "unknown_status",
            Self::BackfillCreated => "backfill_created",
            Self::BackfillFinished => "backfill_finished",
        }
    }
}

/// One thing an engine step is given.
#[derive(Debug, Clone)]
pub enum Input {
    /// Something happened: an answer to an action, a hint, time passing, or an operator request
    /// nobody waits on (a refusal is only logged).
    Event(Event),
    /// An operator request whose answer goes back in `Output::replies`, addressed to `reply`.
    Request {
        reply: ReplyTo,
        request: OperatorRequest,
    },
}

impl From<Event> for Input {
    fn from(event: Event) -> Self {
        Self::Event(event)
    }
}

/// Whom an operator request's answer goes to (the runtime's own numbering).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReplyTo(pub u64);

/// The answer to one operator request.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub to: ReplyTo,
    pub result: Result<Outcome, OperatorError>,
}

/// What one engine step produced, in the order the runtime carries it out: `writes` are made
/// durable first, then `actions` are carried out, then `replies` are sent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Output {
    pub writes: Vec<Write>,
    pub actions: Vec<Action>,
    /// What happened, for logs, metrics and notifications.
    pub transitions: Vec<Transition>,
    pub replies: Vec<Reply>,
    /// The next instant at which time alone changes something. `None`: only an input will.
    pub wake_at: Option<DateTime<Utc>>,
}

/// What the planning passes decided: actions to carry out now and when to look again.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub actions: Vec<Action>,
    /// The next instant at which time alone changes something. `None`: only an event will.
    pub wake_at: Option<DateTime<Utc>>,
}

/// A backfill request the engine refuses, with what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackfillError {
    #[error("no pipeline named `{0}` is loaded")]
    UnknownPipeline(PipelineName),
    #[error("{0}")]
    Invalid(String),
    #[error("a backfill with id `{0}` exists already")]
    Exists(BackfillId),
}

/// One date as a dry run shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PreviewDate {
    pub logical_date: DateTime<Utc>,
    pub run: Option<PipelineRunId>,
    pub skipped: Option<String>,
    /// The first attempt's trigger body of each step, rendered for this date.
    pub triggers: Vec<PreviewTrigger>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PreviewTrigger {
    pub step: StepName,
    pub job_id: JobId,
    pub body: Option<TriggerRequest>,
    pub error: Option<String>,
}

/// What a fetch came to.
#[derive(Debug, Clone)]
pub enum DetailsFetch {
    Fetched(FailureDetails),
    /// dbt Cloud could not be asked; try again later.
    Failed(String),
}
