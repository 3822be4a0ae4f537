//! Serde types that mirror the pipeline YAML one to one. They exist to derive the JSON Schema that
//! `baton schema` prints (editors validate and complete with it); the daemon itself lowers the
//! spanned YAML tree by hand so that it can report every problem with its position.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A baton pipeline: a schedule and a DAG of dbt Cloud jobs. One pipeline per file.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "baton pipeline")]
pub struct RawPipeline {
    /// Unique name of the pipeline (letters, digits, `_`, `-`, `.`).
    pub name: String,
    pub description: Option<String>,
    /// When the pipeline runs by itself. Without a schedule it runs only when triggered.
    pub schedule: Option<RawSchedule>,
    /// What a tick does while the previous run is still active (default `skip`).
    pub concurrency: Option<RawConcurrency>,
    /// A suspended pipeline's ticks are skipped.
    pub suspended: Option<bool>,
    /// Template of the dbt Cloud run's `cause`; the attempt key is appended. At most 212 characters
    /// rendered. Default: `baton: {{ pipeline }} {{ step }} {{ logical_date }} attempt {{ attempt }}`.
    pub cause: Option<String>,
    /// Policies every step inherits unless it sets its own.
    pub defaults: Option<RawDefaults>,
    /// The steps by name: each a dbt Cloud job.
    pub steps: BTreeMap<String, RawStep>,
    /// Rolling re-run of recent logical dates on a schedule of its own.
    pub backfill: Option<RawBackfill>,
    /// How long after its logical date a run must have succeeded (`2h`, `90m`). A run not done by
    /// then is late: a `late` notification, a metric, a mark in the status. Backfill runs get it
    /// only when the backfill asks (`--deadline`).
    pub deadline: Option<String>,
}

/// A 5-field cron expression in an IANA time zone.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSchedule {
    /// minute hour day-of-month month day-of-week, e.g. `30 2 * * *`.
    pub cron: String,
    /// IANA time zone name (default `UTC`).
    pub timezone: Option<String>,
    /// What to do with ticks missed while baton was down (default `latest`).
    pub catchup: Option<RawCatchup>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RawCatchup {
    None,
    Latest,
    All,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RawConcurrency {
    Skip,
    Queue,
    CancelRunning,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawDefaults {
    pub retry: Option<RawRetry>,
    /// Whole-attempt limit (humantime: `2h`, `90m`); exceeded attempts are cancelled in dbt Cloud.
    pub timeout: Option<String>,
    /// Limit on time queued in dbt Cloud (status 1 or 2).
    pub queue_timeout: Option<String>,
}

/// Retry policy.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    /// Total attempts, the first included (1 = no retry).
    #[schemars(range(min = 1))]
    pub attempts: Option<u32>,
    /// Delay before the first retry, doubling after each (humantime).
    pub backoff: Option<String>,
    /// Cap on the delay (humantime).
    pub max_backoff: Option<String>,
    /// Retry a failed run through rerun-from-failure.
    pub from_failure: Option<bool>,
    /// Retry attempts that timed out.
    pub on_timeout: Option<bool>,
    /// Retry runs cancelled from outside baton.
    pub on_cancel: Option<bool>,
}

/// One dbt Cloud job in the DAG.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("anyOf" = [{"required": ["job_id"]}, {"required": ["job_name"]}]))]
pub struct RawStep {
    /// The dbt Cloud account of the job, by the name the daemon config gives it (`dbt_cloud:` is
    /// `default`, the default; others are under `accounts:`).
    pub account: Option<String>,
    /// The dbt Cloud job id (or give `job_name`).
    #[schemars(range(min = 1))]
    pub job_id: Option<i64>,
    /// The dbt Cloud job by its exact name, instead of `job_id`: resolved through the jobs list at
    /// start-up and on reload (exactly one job must carry it), so a job recreated under a new id
    /// is picked up.
    pub job_name: Option<String>,
    /// With `job_name`: only jobs of this project.
    #[schemars(range(min = 1))]
    pub project_id: Option<i64>,
    /// With `job_name`: only jobs of this environment.
    #[schemars(range(min = 1))]
    pub environment_id: Option<i64>,
    /// Steps that must succeed before this one starts.
    pub depends_on: Option<Vec<String>>,
    /// Trigger overrides; strings are templates.
    pub overrides: Option<RawOverrides>,
    pub retry: Option<RawRetry>,
    pub timeout: Option<String>,
    pub queue_timeout: Option<String>,
}

/// Fields of dbt Cloud's trigger request. Strings are minijinja templates with `logical_date`,
/// `ds`, `ds_nodash`, `data_interval_start`, `data_interval_end`, `pipeline`, `step`, `attempt`,
/// `is_backfill`.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawOverrides {
    pub git_sha: Option<String>,
    pub git_branch: Option<String>,
    pub schema_override: Option<String>,
    pub dbt_version_override: Option<String>,
    pub threads_override: Option<i64>,
    pub target_name_override: Option<String>,
    pub generate_docs_override: Option<bool>,
    pub timeout_seconds_override: Option<i64>,
    pub steps_override: Option<Vec<String>>,
}

/// "Every Saturday re-run the last 7 days": one pipeline run per `every` within `window`.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawBackfill {
    pub schedule: RawBackfillSchedule,
    /// How far back each backfill reaches (humantime, e.g. `7d`).
    pub window: String,
    /// Spacing of the logical dates (default `1d`).
    pub every: Option<String>,
    /// Pipeline runs of the backfill active at once (default 1).
    #[schemars(range(min = 1))]
    pub max_active: Option<u32>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawBackfillSchedule {
    pub cron: String,
    /// Default: the pipeline's schedule's zone, else `UTC`.
    pub timezone: Option<String>,
}

/// The draft-07 JSON Schema of a pipeline file.
pub fn pipeline_schema() -> serde_json::Value {
    let generator = schemars::generate::SchemaSettings::draft07().into_generator();
    let schema = generator.into_root_schema_for::<RawPipeline>();
    schema.to_value()
}

/// `pipeline_schema` as the pretty JSON that `baton schema` prints and `baton.schema.json` holds.
pub fn pipeline_schema_json() -> String {
    let mut text = serde_json::to_string_pretty(&pipeline_schema()).unwrap_or_default();
    text.push('\n');
    text
}
