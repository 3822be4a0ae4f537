//! The engine's vocabulary with the outside world: events it is fed, actions it asks for, and the
//! transitions it reports for logs and metrics.

use super::state::{AttemptKey, AttemptRef, PipelineRunId};
use crate::dbt_cloud::wire::{Run, TriggerRequest};
use crate::ids::{JobId, RunId};
use crate::model::pipeline::PipelineName;
use chrono::{DateTime, Utc};
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
        fetch: super::details::DetailsFetch,
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

/// Requests an operator makes through the API or CLI.
#[derive(Debug, Clone)]
pub enum OperatorRequest {
    TriggerPipeline {
        pipeline: PipelineName,
        logical_date: Option<DateTime<Utc>>,
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
    /// Create a backfill (checked first with `Engine::preview_backfill`).
    CreateBackfill {
        id: super::backfill::BackfillId,
        spec: super::backfill::BackfillSpec,
    },
    CancelBackfill {
        id: super::backfill::BackfillId,
    },
}

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
    /// Look at these runs (batched per 100 by the executor).
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

/// What `plan` decided: actions to carry out now and when to look again.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub actions: Vec<Action>,
    /// The next instant at which time alone changes something. `None`: only an event will.
    pub wake_at: Option<DateTime<Utc>>,
}
