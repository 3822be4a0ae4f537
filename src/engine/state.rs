//! The persisted state of the scheduler: pipeline runs, their steps and attempts, and each
//! pipeline's schedule cursor. Plain data with serde, so the store can write it and the engine can
//! reason about it without IO.

use crate::dbt_cloud::wire::{RunStatus, TriggerRequest};
use crate::ids::{JobId, RunId};
use crate::model::pipeline::{Pipeline, PipelineName, StepName};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Identifies one pipeline run: the pipeline and its logical time, which together are unique.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PipelineRunId(pub String);

impl PipelineRunId {
    /// The id of a pipeline run that a backfill re-runs for a date that already ran: the plain id
    /// with the backfill's id appended, so both records are kept.
    pub fn reprocessed(
        pipeline: &PipelineName,
        logical_date: DateTime<Utc>,
        backfill: &str,
    ) -> Self {
        Self(format!(
            "{}#{backfill}",
            Self::new(pipeline, logical_date).0
        ))
    }

    pub fn new(pipeline: &PipelineName, logical_date: DateTime<Utc>) -> Self {
        Self(format!(
            "{}@{}",
            pipeline.0,
            logical_date.to_rfc3339_opts(SecondsFormat::Secs, true)
        ))
    }
}

impl fmt::Display for PipelineRunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The unique key an attempt carries inside the trigger's `cause`, so that after an ambiguous
/// answer or a crash the run it created can be found and adopted instead of triggered again.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AttemptKey(pub String);

impl AttemptKey {
    /// Derived from what makes the attempt unique; 19 characters (`bt-` and 16 hex digits).
    pub fn derive(run: &PipelineRunId, step: &StepName, attempt: u32) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(run.0.as_bytes());
        hasher.update([0]);
        hasher.update(step.0.as_bytes());
        hasher.update([0]);
        hasher.update(attempt.to_be_bytes());
        let digest = hasher.finalize();
        Self(format!("bt-{}", hex::encode(&digest[..8])))
    }
}

impl fmt::Display for AttemptKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Points at one attempt of one step of one pipeline run.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AttemptRef {
    pub run: PipelineRunId,
    pub step: StepName,
    pub number: u32,
}

impl fmt::Display for AttemptRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} #{}", self.run, self.step, self.number)
    }
}

/// Why a pipeline run exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum RunOrigin {
    Schedule,
    /// A tick missed while the daemon was down, run by the catch-up policy.
    Catchup,
    Manual,
    Backfill {
        backfill: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PipelineRunState {
    /// Waiting for an earlier run of the same pipeline (concurrency `queue` or `cancel_running`).
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl PipelineRunState {
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

/// One execution of a pipeline for one logical time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineRun {
    pub id: PipelineRunId,
    /// The definition the run started with: a reload never changes a run in flight.
    pub definition: Arc<Pipeline>,
    pub logical_date: DateTime<Utc>,
    pub data_interval_start: DateTime<Utc>,
    pub origin: RunOrigin,
    pub state: PipelineRunState,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Set when an operator or the concurrency policy cancels the run.
    pub cancel_reason: Option<CancelReason>,
    pub steps: BTreeMap<StepName, StepRun>,
    /// When the run must have succeeded by (the pipeline's `deadline` after the logical date; a
    /// backfill run only when its backfill asked). Absent in records written before deadlines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<DateTime<Utc>>,
    /// When the engine found the run late and announced it: set once, persisted, so a restart
    /// does not announce it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub late_since: Option<DateTime<Utc>>,
}

impl PipelineRun {
    pub fn pipeline(&self) -> &PipelineName {
        &self.definition.name
    }

    pub fn is_backfill(&self) -> bool {
        matches!(self.origin, RunOrigin::Backfill { .. })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum StepState {
    /// Waiting for upstreams, or for room under the account's in-flight cap.
    Pending,
    /// An attempt is being triggered or is running in dbt Cloud.
    Running,
    /// The last attempt failed; the next starts at `until`.
    WaitingRetry {
        until: DateTime<Utc>,
    },
    Succeeded,
    Failed,
    UpstreamFailed,
    Cancelled,
}

impl StepState {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::UpstreamFailed | Self::Cancelled
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::WaitingRetry { .. } => "waiting_retry",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::UpstreamFailed => "upstream_failed",
            Self::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRun {
    pub state: StepState,
    pub attempts: Vec<Attempt>,
}

impl StepRun {
    pub fn new() -> Self {
        Self {
            state: StepState::Pending,
            attempts: Vec::new(),
        }
    }

    pub fn current(&self) -> Option<&Attempt> {
        self.attempts.last()
    }
}

impl Default for StepRun {
    fn default() -> Self {
        Self::new()
    }
}

/// How an attempt asks dbt Cloud for a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum AttemptKind {
    /// `POST jobs/{id}/run/` with the rendered overrides and the key in `cause`.
    Trigger,
    /// `POST jobs/{id}/rerun/` from the failed step, if `failed_run` is still the job's latest run;
    /// otherwise a full trigger.
    RerunFrom { failed_run: RunId },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptPhase {
    /// Intent persisted; the POST may or may not have reached dbt Cloud.
    Triggering,
    /// dbt Cloud gave a run id; watching it.
    Active,
    Finished,
}

/// Why baton asked dbt Cloud to cancel a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelReason {
    /// The step's `timeout` (whole attempt) passed.
    Timeout,
    /// The step's `queue_timeout` (time in status 1 or 2) passed.
    QueueTimeout,
    /// An operator cancelled the pipeline run.
    Operator,
    /// A newer tick arrived under `concurrency: cancel_running`.
    Superseded,
    /// The daemon shut down with `on_shutdown: cancel`.
    Shutdown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelRequest {
    pub reason: CancelReason,
    pub requested_at: DateTime<Utc>,
    /// dbt Cloud acknowledged the cancel; baton keeps polling until it reports status 30.
    pub acknowledged: bool,
}

/// How an attempt ended. The class decides whether the retry policy applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    Success,
    /// The run ended in status 20.
    Error,
    /// Ended by baton's `timeout` or by dbt Cloud's own timeout.
    TimedOut,
    /// Ended by baton's `queue_timeout`.
    QueueTimedOut,
    /// Cancelled by an operator, the concurrency policy or shutdown.
    CancelledByBaton,
    /// Cancelled from outside baton.
    CancelledOutside,
    /// dbt Cloud definitely refused the trigger (4xx).
    Rejected,
}

impl AttemptOutcome {
    pub fn name(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Error => "error",
            Self::TimedOut => "timed_out",
            Self::QueueTimedOut => "queue_timed_out",
            Self::CancelledByBaton => "cancelled",
            Self::CancelledOutside => "cancelled_outside",
            Self::Rejected => "rejected",
        }
    }
}

/// One status change seen on the dbt Cloud side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusChange {
    pub status: i64,
    pub at: DateTime<Utc>,
}

/// One dbt Cloud run of one step within a pipeline run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub number: u32,
    pub key: AttemptKey,
    pub job_id: JobId,
    pub kind: AttemptKind,
    pub phase: AttemptPhase,
    /// The rendered trigger body, `cause` included.
    pub request: TriggerRequest,
    pub run_id: Option<RunId>,
    pub href: Option<String>,
    pub status: Option<RunStatus>,
    pub history: Vec<StatusChange>,
    pub blocked_by: Vec<RunId>,
    /// When the intent was persisted (before the first POST).
    pub created_at: DateTime<Utc>,
    /// How many times the trigger was sent (a re-send only follows a reconciliation that found
    /// nothing, or a definite refusal such as 429).
    pub sends: u32,
    /// Re-send the trigger at this instant (after a definite, transient refusal).
    pub resend_at: Option<DateTime<Utc>>,
    /// An ambiguous answer or a restart left the trigger's fate unknown: reconcile at this instant.
    pub reconcile_at: Option<DateTime<Utc>>,
    pub accepted_at: Option<DateTime<Utc>>,
    /// When the run was last seen entering status 1 or 2.
    pub queued_since: Option<DateTime<Utc>>,
    pub running_since: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub cancel: Option<CancelRequest>,
    pub outcome: Option<AttemptOutcome>,
    /// dbt Cloud's `status_message`, or the refusal's message.
    pub message: Option<String>,
    /// Why the run failed, fetched after it ended in error (absent in records written before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<FailureDetails>,
    /// How long the run took by dbt Cloud's own timestamps (created to finished), kept for a
    /// success: the job's duration history that predicted polling learns from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_duration_ms: Option<u64>,
}

impl Attempt {
    pub fn is_in_flight(&self) -> bool {
        self.phase != AttemptPhase::Finished
    }
}

/// Per pipeline: the last schedule tick handled, and whether an operator paused it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleCursor {
    pub last_tick: Option<DateTime<Utc>>,
    pub paused: bool,
}

/// What the engine remembers of a finished pipeline run whose record lives only in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchivedRun {
    pub state: PipelineRunState,
    pub finished_at: DateTime<Utc>,
}

/// Everything the engine holds in memory: every unfinished pipeline run and the recently finished
/// ones in full, the rest of the history as one small entry each.
#[derive(Debug, Clone, Default)]
pub struct State {
    pub runs: BTreeMap<PipelineRunId, PipelineRun>,
    /// Finished runs moved out of memory (`Write::Archive`); the store keeps their records.
    /// Millions over a retention period: compact entries (`archive.rs`), read at start-up.
    pub archived: super::archive::Archive,
    /// Per pipeline, when its newest archived successful run finished.
    pub archived_last_success: BTreeMap<PipelineName, DateTime<Utc>>,
    pub cursors: BTreeMap<PipelineName, ScheduleCursor>,
    pub backfills: BTreeMap<BackfillId, Backfill>,
}

impl State {
    /// A pipeline run's state, whether its record is in memory or archived.
    pub fn run_state(&self, id: &PipelineRunId) -> Option<PipelineRunState> {
        self.runs
            .get(id)
            .map(|r| r.state)
            .or_else(|| self.archived.get(id).map(|a| a.state))
    }

    pub fn knows_run(&self, id: &PipelineRunId) -> bool {
        self.runs.contains_key(id) || self.archived.contains_key(id)
    }
}

/// A change the store must make durable before the actions that depend on it run.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    Run(Box<PipelineRun>),
    /// A run held in memory changed: the store encodes it from the state it commits with
    /// (`Store::commit_from`), so a turn never copies the runs it writes.
    Changed(PipelineRunId),
    /// A finished run leaves memory: the store keeps its record in the history.
    Archive(Box<PipelineRun>),
    /// Forgets a run, in memory or archived.
    DeleteRun(PipelineRunId),
    Cursor(PipelineName, ScheduleCursor),
    Backfill(Box<Backfill>),
}

// Why a run failed: the persisted part (behaviour in `details.rs`).

/// One model, test, seed or snapshot that failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeFailure {
    pub unique_id: String,
    /// `error` (a model that failed), `fail` (a test that failed), ...
    pub status: String,
    pub message: Option<String>,
}

/// What is known about why a dbt Cloud run ended in error.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureDetails {
    /// The name of the run step that failed (e.g. "Invoke dbt with `dbt build`").
    pub failed_step: Option<String>,
    /// The end of that step's log.
    pub log_tail: Option<String>,
    pub failures: Vec<NodeFailure>,
    /// Failed nodes beyond `details::MAX_FAILURES`, counted but not kept.
    pub more_failures: usize,
    /// The run wrote no `run_results.json` (or it was not uploaded within the wait).
    pub run_results_missing: bool,
    /// A problem fetching the details, for the operator.
    pub note: Option<String>,
}

// Backfills: the persisted part (behaviour in `backfill.rs`).

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BackfillId(pub String);

impl fmt::Display for BackfillId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What to do with a date that already has a pipeline run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reprocess {
    /// Leave it: the date is skipped.
    #[default]
    None,
    /// Run it again when its run failed or was cancelled.
    Failed,
    /// Run it again whatever became of it (unless a run of it is active).
    All,
}

/// What an operator (or a rolling backfill) asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackfillSpec {
    pub pipeline: PipelineName,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// One date per `every` from `from`; absent: the pipeline's fire times in `[from, to]`.
    #[serde(default, with = "humantime_serde_opt")]
    pub every: Option<Duration>,
    pub max_active: u32,
    #[serde(default)]
    pub reprocess: Reprocess,
    /// Whether the pipeline's `deadline` applies to these runs (a past date is late by definition,
    /// so only when asked: `--deadline`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deadline: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackfillState {
    Running,
    Succeeded,
    /// Every date ran; some did not succeed.
    Failed,
    Cancelled,
}

/// One logical date of a backfill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackfillDate {
    pub logical_date: DateTime<Utc>,
    /// The pipeline run it uses (absent when skipped).
    pub run: Option<PipelineRunId>,
    /// Why the date does not run.
    pub skipped: Option<String>,
    /// Its pipeline run was created.
    pub started: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backfill {
    pub id: BackfillId,
    pub spec: BackfillSpec,
    /// Created by the pipeline's rolling `backfill:` section rather than by an operator.
    pub rolling: bool,
    pub state: BackfillState,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub dates: Vec<BackfillDate>,
}

/// `every` as a humantime string ("1day") in JSON.
mod humantime_serde_opt {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        text.map(|t| {
            humantime::parse_duration(&t)
                .map_err(|e| serde::de::Error::custom(format!("bad duration `{t}`: {e}")))
        })
        .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempt_keys_are_short_and_distinct() {
        let run = PipelineRunId("nightly@2026-01-01T02:00:00Z".into());
        let a = AttemptKey::derive(&run, &StepName("marts".into()), 1);
        let b = AttemptKey::derive(&run, &StepName("marts".into()), 2);
        assert_ne!(a, b);
        assert_eq!(a.0.len(), 19);
    }
}
