//! The validated pipeline: name, schedule, concurrency policy, steps in topological order, and each
//! step's job, overrides and policies.

use crate::ids::{AccountName, EnvironmentId, JobId, ProjectId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// A pipeline's unique name (one pipeline per file).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PipelineName(pub String);

/// A step's name, unique within its pipeline.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StepName(pub String);

impl fmt::Display for PipelineName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for StepName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What to do with schedule ticks missed while the daemon was down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CatchupPolicy {
    /// Missed ticks are dropped.
    None,
    /// Only the most recent missed tick runs.
    #[default]
    Latest,
    /// Every missed tick runs (up to the daemon's configured maximum).
    All,
}

/// What to do when a tick arrives while the pipeline's previous run is still active.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ConcurrencyPolicy {
    #[default]
    Skip,
    Queue,
    CancelRunning,
}

/// Retry policy of a step, by failure class.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Total attempts allowed, the first included (1 = no retry).
    pub attempts: u32,
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// Retry a run that ended in error through `jobs/{id}/rerun/` when it is still the job's latest.
    pub from_failure: bool,
    /// Whether a timed-out attempt (ours or dbt Cloud's) is retried. Default false.
    pub on_timeout: bool,
    /// Whether a run cancelled from outside baton is retried. Default false.
    pub on_cancel: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 1,
            backoff: Duration::from_secs(60),
            max_backoff: Duration::from_secs(30 * 60),
            from_failure: false,
            on_timeout: false,
            on_cancel: false,
        }
    }
}

/// What a step allows: retries and time.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepLimits {
    pub retry: RetryPolicy,
    /// Whole-attempt limit, enforced by baton with a confirmed cancel.
    pub timeout: Option<Duration>,
    /// Limit on time spent in dbt Cloud status 1 or 2.
    pub queue_timeout: Option<Duration>,
}

impl StepLimits {
    /// The limits as steps hold them: the default ones are one allocation for the whole process.
    pub fn shared(self) -> Arc<Self> {
        static DEFAULT: std::sync::LazyLock<Arc<StepLimits>> =
            std::sync::LazyLock::new(|| Arc::new(StepLimits::default()));
        if self == **DEFAULT {
            DEFAULT.clone()
        } else {
            Arc::new(self)
        }
    }
}

impl RetryPolicy {
    /// Delay before attempt number `next_attempt` (2 for the first retry): exponential, capped.
    pub fn delay_before(&self, next_attempt: u32) -> Duration {
        let exponent = next_attempt.saturating_sub(2).min(30);
        let delay = self.backoff.saturating_mul(1u32 << exponent);
        delay.min(self.max_backoff)
    }
}

/// A template string (minijinja syntax), already checked to render against a sample context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Template(pub String);

/// An override value as written in the pipeline file: strings are templates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OverrideValue {
    Text(Template),
    Integer(i64),
    Bool(bool),
    List(Vec<Template>),
}

/// The overrides of a step, keyed by the trigger endpoint's field name (`schema_override`,
/// `threads_override`, `steps_override`, ...). Each key is one the trigger endpoint takes, with a
/// value of the right type (checked at validation).
pub type Overrides = BTreeMap<String, OverrideValue>;

/// A job named instead of numbered: resolved to its id through dbt Cloud's jobs list (exactly one
/// job of that exact name, within the project and environment when given).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct JobRef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<ProjectId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment_id: Option<EnvironmentId>,
}

/// One node of the DAG: a dbt Cloud job with its overrides and policies (defaults already applied).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub name: StepName,
    /// The job's id: as written, or resolved from `job_ref` (0 until resolved).
    pub job_id: JobId,
    /// The job by name, when the file names it (`job_name:`); absent in older records. Boxed:
    /// most steps have none, and each step of every loaded pipeline would carry its room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_ref: Option<Box<JobRef>>,
    pub depends_on: Vec<StepName>,
    pub overrides: Overrides,
    /// Retry policy and time limits, shared by the steps that allow alike
    /// (`StepLimits::shared`): 72 bytes less per step of every loaded pipeline. Written inline
    /// among the step's own fields, as before, so digests do not change.
    #[serde(flatten)]
    pub limits: Arc<StepLimits>,
    /// The dbt Cloud account the job lives in (the daemon config names its accounts). Not
    /// written when `default`, so the digests of older definitions do not change.
    #[serde(default, skip_serializing_if = "AccountName::is_default")]
    pub account: AccountName,
}

/// A pipeline's schedule: a 5-field cron expression in an IANA time zone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleSpec {
    pub cron: String,
    pub timezone: chrono_tz::Tz,
    pub catchup: CatchupPolicy,
}

/// A validated pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pipeline {
    pub name: PipelineName,
    pub description: Option<String>,
    /// The file it was loaded from.
    pub source: PathBuf,
    pub schedule: Option<ScheduleSpec>,
    pub concurrency: ConcurrencyPolicy,
    pub suspended: bool,
    /// `cause` template; the daemon always appends the attempt key to what it renders.
    pub cause: Option<Template>,
    /// Steps in a topological order (every step after all its upstreams), ties by name.
    pub steps: Vec<Step>,
    /// A rolling re-run of recent logical dates on a schedule of its own (reserved: parsed and
    /// validated; the backfill machinery consumes it). Absent in records stored before it existed.
    #[serde(default)]
    pub backfill: Option<RollingBackfill>,
    /// How long after its logical date a run must have succeeded; a run not done by then is late
    /// (`engine/deadline.rs`). Absent in records stored before it existed, and not written when
    /// unset so the digests of older definitions do not change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Duration>,
}

/// "Every Saturday, re-run the last 7 days, one pipeline run per day": on each tick of `schedule`,
/// a backfill of the logical dates `every` apart covering the `window` before that tick, at most
/// `max_active` pipeline runs at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RollingBackfill {
    /// When the backfill starts; its catch-up policy is always `none`.
    pub schedule: ScheduleSpec,
    pub window: Duration,
    pub every: Duration,
    pub max_active: u32,
}

impl Step {
    /// The job as people read it: its id, its name, or both once a name is resolved.
    pub fn job_label(&self) -> String {
        match &self.job_ref {
            Some(job) if self.job_id.0 == 0 => format!("\"{}\"", job.name),
            Some(job) => format!("{} \"{}\"", self.job_id, job.name),
            None => self.job_id.to_string(),
        }
    }
}

impl Pipeline {
    /// Each step's depth in the DAG (roots 0, otherwise one more than its deepest upstream), in
    /// the steps' own (topological) order.
    pub fn step_depths(&self) -> Vec<usize> {
        let mut depth: std::collections::HashMap<&str, usize> =
            std::collections::HashMap::with_capacity(self.steps.len());
        self.steps
            .iter()
            .map(|step| {
                let d = step
                    .depends_on
                    .iter()
                    .filter_map(|up| depth.get(up.0.as_str()))
                    .map(|d| d + 1)
                    .max()
                    .unwrap_or(0);
                depth.insert(step.name.0.as_str(), d);
                d
            })
            .collect()
    }

    pub fn step(&self, name: &StepName) -> Option<&Step> {
        self.steps.iter().find(|s| &s.name == name)
    }

    /// Steps that list `name` in their `depends_on`.
    pub fn downstream_of<'a>(&'a self, name: &'a StepName) -> impl Iterator<Item = &'a Step> + 'a {
        self.steps
            .iter()
            .filter(move |s| s.depends_on.contains(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_is_written_as_before_its_limits_were_shared() {
        let step = Step {
            name: StepName("s".into()),
            job_id: JobId(7),
            job_ref: None,
            depends_on: vec![],
            overrides: Overrides::new(),
            limits: StepLimits {
                timeout: Some(Duration::from_secs(60)),
                ..StepLimits::default()
            }
            .shared(),
            account: AccountName::default(),
        };
        let json = serde_json::to_string(&step).unwrap();
        assert_eq!(
            json,
            r#"{"name":"s","job_id":7,"depends_on":[],"overrides":{},"retry":{"attempts":1,"backoff":{"secs":60,"nanos":0},"max_backoff":{"secs":1800,"nanos":0},"from_failure":false,"on_timeout":false,"on_cancel":false},"timeout":{"secs":60,"nanos":0},"queue_timeout":null}"#
        );
        let back: Step = serde_json::from_str(&json).unwrap();
        assert_eq!(back, step);
        assert!(Arc::ptr_eq(
            &StepLimits::default().shared(),
            &StepLimits::default().shared()
        ));
    }
}
