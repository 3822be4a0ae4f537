//! One run's record: what was planned at creation (steps, running time, the failing step, timeout)
//! and what has happened so far; how a run ends.

use crate::dbt_cloud::wire::{RunStatus, TriggerRequest};
use crate::ids::{JobId, RunId, TriggerId};
use chrono::{DateTime, Duration, Utc};

/// The steps every run does before its dbt commands.
pub const SETUP_STEPS: [&str; 3] = [
    "Clone git repository",
    "Create profile from connection Snowflake",
    "Invoke dbt with `dbt deps`",
];

/// Why a finished run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Success,
    /// Failed at this 1-based step index.
    Error {
        step: usize,
    },
    TimedOut,
    Cancelled,
}

/// A lifecycle transition that webhooks announce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifecycleKind {
    Started,
    Completed,
    Errored,
}

#[derive(Debug, Clone, Copy)]
pub struct LifecycleEvent {
    pub run_id: RunId,
    pub kind: LifecycleKind,
    pub at: DateTime<Utc>,
}

/// Everything about one run, planned at creation and filled in as time passes.
#[derive(Debug, Clone)]
pub struct RunState {
    pub id: RunId,
    pub job_id: JobId,
    pub trigger_id: TriggerId,
    pub request: TriggerRequest,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub status: RunStatus,
    /// When the run got its turn (first of its job, within the slot limit).
    pub eligible_since: Option<DateTime<Utc>>,
    pub dequeued_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub status_message: Option<String>,
    pub ending: Option<Ending>,
    /// Names of this run's steps (setup, then dbt commands).
    pub steps: Vec<String>,
    /// Commands a rerun from failure did not repeat.
    pub skipped_steps: Vec<String>,
    pub step_id_base: i64,
    /// Planned running time of all steps together.
    pub run_time: Duration,
    /// The 1-based step that will fail, if the run is to fail.
    pub fails_at: Option<usize>,
    /// The effective timeout in seconds (override, else the job's), 0 for none.
    pub timeout_seconds: i64,
    pub queue_delay: Duration,
    pub cancel_requested_at: Option<DateTime<Utc>>,
    /// 40 random hex digits drawn at creation: the default git sha, thread and invocation ids.
    pub fingerprint: String,
    pub planned_git_sha: String,
    pub git_sha: Option<String>,
    pub git_branch: Option<String>,
    pub via_rerun: bool,
    /// The failed run this one resumes, for a rerun from failure.
    pub resumes: Option<RunId>,
    /// The HTTP status the trigger request was answered with (a fault may turn 200 into 502).
    pub answered_status: u16,
}

impl RunState {
    pub fn step_duration(&self) -> Duration {
        let n = self.steps.len().max(1) as i32;
        self.run_time / n
    }

    /// When the run will end by itself (success or failure at `fails_at`), once started.
    pub fn natural_end(&self) -> Option<DateTime<Utc>> {
        let started = self.started_at?;
        let last = self.fails_at.unwrap_or(self.steps.len()) as i32;
        Some(started + self.step_duration() * last)
    }

    pub fn timeout_at(&self) -> Option<DateTime<Utc>> {
        let started = self.started_at?;
        (self.timeout_seconds > 0).then(|| started + Duration::seconds(self.timeout_seconds))
    }

    pub fn is_terminal(&self) -> bool {
        self.status.is_terminal()
    }
}

pub(super) fn finish_with(
    run: &mut RunState,
    ending: Ending,
    at: DateTime<Utc>,
    message: Option<String>,
) {
    run.status = match ending {
        Ending::Success => RunStatus::Success,
        Ending::Error { .. } => RunStatus::Error,
        Ending::TimedOut | Ending::Cancelled => RunStatus::Cancelled,
    };
    run.ending = Some(ending);
    run.finished_at = Some(at);
    run.updated_at = at;
    run.status_message = message;
}

/// The step name dbt Cloud shows for a dbt command.
pub fn invoke_step_name(command: &str) -> String {
    format!("Invoke dbt with `{command}`")
}
