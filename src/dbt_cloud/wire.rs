//! Wire types of the dbt Cloud Administrative API v2, shared by the client (which decodes them
//! tolerantly: every field but `id` and `status` may be null or absent, unknown fields are ignored) and
//! the emulator (which writes every key, null where the real API writes null).

use super::time::{IsoTimestamp, SpacedTimestamp};
use crate::ids::{AccountId, EnvironmentId, JobId, ProjectId, RunId, StepId, TriggerId};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// The `status` object of every JSON response, errors included.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiStatus {
    pub code: u16,
    pub is_success: bool,
    #[serde(default)]
    pub user_message: Option<String>,
    #[serde(default)]
    pub developer_message: Option<String>,
}

/// `{"status": ..., "data": ..., "extra": ...}`: the envelope around every JSON response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope<T> {
    pub status: ApiStatus,
    #[serde(default = "none")]
    pub data: Option<T>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<Extra>,
}

fn none<T>() -> Option<T> {
    None
}

/// The `extra` object of list responses.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Extra {
    #[serde(default)]
    pub filters: serde_json::Map<String, Value>,
    #[serde(default)]
    pub order_by: Option<String>,
    #[serde(default)]
    pub pagination: Option<Pagination>,
}

/// `count` is the size of this page; `total_count` of every page together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pagination {
    #[serde(default)]
    pub count: u64,
    #[serde(default)]
    pub total_count: u64,
}

/// A run's status code. Codes outside the documented six are kept, and are not terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunStatus {
    Queued,
    Starting,
    Running,
    Success,
    Error,
    Cancelled,
    Unknown(i64),
}

impl RunStatus {
    pub fn from_code(code: i64) -> Self {
        match code {
            1 => Self::Queued,
            2 => Self::Starting,
            3 => Self::Running,
            10 => Self::Success,
            20 => Self::Error,
            30 => Self::Cancelled,
            other => Self::Unknown(other),
        }
    }

    pub fn code(self) -> i64 {
        match self {
            Self::Queued => 1,
            Self::Starting => 2,
            Self::Running => 3,
            Self::Success => 10,
            Self::Error => 20,
            Self::Cancelled => 30,
            Self::Unknown(code) => code,
        }
    }

    /// 10, 20 and 30 end a run; everything else, unknown codes included, may still change.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Success | Self::Error | Self::Cancelled)
    }

    /// Waiting for a slot or a worker (1 and 2): the time `queue_timeout` measures.
    pub fn is_queued(self) -> bool {
        matches!(self, Self::Queued | Self::Starting)
    }

    /// The `status_humanized` string the API writes.
    pub fn humanized(self) -> &'static str {
        match self {
            Self::Queued => "Queued",
            Self::Starting => "Starting",
            Self::Running => "Running",
            Self::Success => "Success",
            Self::Error => "Error",
            Self::Cancelled => "Cancelled",
            Self::Unknown(_) => "Unknown",
        }
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.humanized(), self.code())
    }
}

impl Serialize for RunStatus {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(self.code())
    }
}

impl<'de> Deserialize<'de> for RunStatus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        i64::deserialize(d).map(Self::from_code)
    }
}

/// A dbt Cloud run, as `runs/`, `runs/{id}/`, `jobs/{id}/run/` and `runs/{id}/cancel/` return it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub id: RunId,
    pub status: RunStatus,
    #[serde(default)]
    pub trigger_id: Option<TriggerId>,
    #[serde(default)]
    pub account_id: Option<AccountId>,
    #[serde(default)]
    pub environment_id: Option<EnvironmentId>,
    #[serde(default)]
    pub project_id: Option<ProjectId>,
    #[serde(default)]
    pub job_definition_id: Option<JobId>,
    #[serde(default)]
    pub dbt_version: Option<String>,
    #[serde(default)]
    pub git_branch: Option<String>,
    #[serde(default)]
    pub git_sha: Option<String>,
    #[serde(default)]
    pub status_message: Option<String>,
    #[serde(default)]
    pub owner_thread_id: Option<String>,
    #[serde(default)]
    pub executed_by_thread_id: Option<String>,
    #[serde(default)]
    pub deferring_run_id: Option<RunId>,
    #[serde(default)]
    pub artifacts_saved: Option<bool>,
    #[serde(default)]
    pub artifact_s3_path: Option<String>,
    #[serde(default)]
    pub has_docs_generated: Option<bool>,
    #[serde(default)]
    pub has_sources_generated: Option<bool>,
    #[serde(default)]
    pub notifications_sent: Option<bool>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub blocked_by: Vec<RunId>,
    #[serde(default)]
    pub created_at: Option<SpacedTimestamp>,
    #[serde(default)]
    pub updated_at: Option<SpacedTimestamp>,
    #[serde(default)]
    pub dequeued_at: Option<SpacedTimestamp>,
    #[serde(default)]
    pub started_at: Option<SpacedTimestamp>,
    #[serde(default)]
    pub finished_at: Option<SpacedTimestamp>,
    #[serde(default)]
    pub last_checked_at: Option<SpacedTimestamp>,
    #[serde(default)]
    pub last_heartbeat_at: Option<SpacedTimestamp>,
    #[serde(default)]
    pub should_start_at: Option<SpacedTimestamp>,
    #[serde(default)]
    pub trigger: Option<Trigger>,
    #[serde(default)]
    pub job: Option<Job>,
    #[serde(default)]
    pub environment: Option<Value>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub run_steps: Vec<RunStep>,
    #[serde(default)]
    pub status_humanized: Option<String>,
    #[serde(default)]
    pub in_progress: Option<bool>,
    #[serde(default)]
    pub is_complete: Option<bool>,
    #[serde(default)]
    pub is_success: Option<bool>,
    #[serde(default)]
    pub is_error: Option<bool>,
    #[serde(default)]
    pub is_cancelled: Option<bool>,
    #[serde(default)]
    pub duration: Option<String>,
    #[serde(default)]
    pub queued_duration: Option<String>,
    #[serde(default)]
    pub run_duration: Option<String>,
    #[serde(default)]
    pub duration_humanized: Option<String>,
    #[serde(default)]
    pub queued_duration_humanized: Option<String>,
    #[serde(default)]
    pub run_duration_humanized: Option<String>,
    #[serde(default)]
    pub created_at_humanized: Option<String>,
    #[serde(default)]
    pub finished_at_humanized: Option<String>,
    #[serde(default)]
    pub retrying_run_id: Option<RunId>,
    #[serde(default)]
    pub can_retry: Option<bool>,
    #[serde(default)]
    pub retry_not_supported_reason: Option<String>,
    #[serde(default)]
    pub job_id: Option<JobId>,
    #[serde(default)]
    pub is_running: Option<bool>,
    #[serde(default)]
    pub href: Option<String>,
    #[serde(default)]
    pub used_repo_cache: Option<bool>,
}

/// The trigger of a run (`include_related=["trigger"]`, and always on the trigger response).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trigger {
    #[serde(default)]
    pub id: Option<TriggerId>,
    #[serde(default)]
    pub cause: Option<String>,
    #[serde(default)]
    pub job_definition_id: Option<JobId>,
    #[serde(default)]
    pub git_branch: Option<String>,
    #[serde(default)]
    pub git_sha: Option<String>,
    #[serde(default)]
    pub azure_pull_request_id: Option<i64>,
    #[serde(default)]
    pub github_pull_request_id: Option<i64>,
    #[serde(default)]
    pub gitlab_merge_request_id: Option<i64>,
    #[serde(default)]
    pub non_native_pull_request_id: Option<i64>,
    #[serde(default)]
    pub schema_override: Option<String>,
    #[serde(default)]
    pub dbt_version_override: Option<String>,
    #[serde(default)]
    pub threads_override: Option<i64>,
    #[serde(default)]
    pub target_name_override: Option<String>,
    #[serde(default)]
    pub generate_docs_override: Option<bool>,
    #[serde(default)]
    pub timeout_seconds_override: Option<i64>,
    #[serde(default)]
    pub steps_override: Option<Vec<String>>,
    #[serde(default)]
    pub created_at: Option<SpacedTimestamp>,
    #[serde(default)]
    pub cause_humanized: Option<String>,
    #[serde(default)]
    pub job: Option<Value>,
    #[serde(default)]
    pub cause_category: Option<String>,
}

/// A job definition (`jobs/{id}/`, `jobs/`, and `include_related=["job"]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: JobId,
    #[serde(default)]
    pub execution: Option<JobExecution>,
    #[serde(default)]
    pub generate_docs: Option<bool>,
    #[serde(default)]
    pub run_generate_sources: Option<bool>,
    #[serde(default)]
    pub run_compare_changes: Option<bool>,
    #[serde(default)]
    pub account_id: Option<AccountId>,
    #[serde(default)]
    pub project_id: Option<ProjectId>,
    #[serde(default)]
    pub environment_id: Option<EnvironmentId>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub dbt_version: Option<String>,
    #[serde(default)]
    pub raw_dbt_version: Option<String>,
    #[serde(default)]
    pub created_at: Option<IsoTimestamp>,
    #[serde(default)]
    pub updated_at: Option<IsoTimestamp>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub execute_steps: Vec<String>,
    #[serde(default)]
    pub state: Option<i64>,
    #[serde(default)]
    pub deactivated: Option<bool>,
    #[serde(default)]
    pub run_failure_count: Option<i64>,
    #[serde(default)]
    pub deferring_job_definition_id: Option<JobId>,
    #[serde(default)]
    pub deferring_environment_id: Option<EnvironmentId>,
    #[serde(default)]
    pub lifecycle_webhooks: Option<bool>,
    #[serde(default)]
    pub lifecycle_webhooks_url: Option<String>,
    #[serde(default)]
    pub triggers: Option<Value>,
    #[serde(default)]
    pub settings: Option<JobSettings>,
    #[serde(default)]
    pub schedule: Option<Value>,
    #[serde(default)]
    pub is_deferrable: Option<bool>,
    #[serde(default)]
    pub job_type: Option<String>,
    #[serde(default)]
    pub triggers_on_draft_pr: Option<bool>,
    #[serde(default)]
    pub job_completion_trigger_condition: Option<Value>,
}

/// `job.execution`: the job's own timeout (0 means none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobExecution {
    #[serde(default)]
    pub timeout_seconds: Option<i64>,
}

/// `job.settings`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSettings {
    #[serde(default)]
    pub threads: Option<i64>,
    #[serde(default)]
    pub target_name: Option<String>,
}

/// One step of a run (`include_related=["run_steps"]`, `steps/{id}/`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunStep {
    #[serde(default)]
    pub id: Option<StepId>,
    #[serde(default)]
    pub run_id: Option<RunId>,
    #[serde(default)]
    pub account_id: Option<AccountId>,
    #[serde(default)]
    pub index: Option<i64>,
    #[serde(default)]
    pub status: Option<RunStatus>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub logs: Option<String>,
    #[serde(default)]
    pub debug_logs: Option<String>,
    #[serde(default)]
    pub log_location: Option<String>,
    #[serde(default)]
    pub log_path: Option<String>,
    #[serde(default)]
    pub debug_log_path: Option<String>,
    #[serde(default)]
    pub log_archive_type: Option<String>,
    #[serde(default)]
    pub truncated_debug_logs: Option<String>,
    #[serde(default)]
    pub created_at: Option<SpacedTimestamp>,
    #[serde(default)]
    pub updated_at: Option<SpacedTimestamp>,
    #[serde(default)]
    pub started_at: Option<SpacedTimestamp>,
    #[serde(default)]
    pub finished_at: Option<SpacedTimestamp>,
    #[serde(default)]
    pub status_color: Option<String>,
    #[serde(default)]
    pub status_humanized: Option<String>,
    #[serde(default)]
    pub duration: Option<String>,
    #[serde(default)]
    pub duration_humanized: Option<String>,
}

/// The body of `POST jobs/{id}/run/` (and `jobs/{id}/rerun/`, which ignores the overrides).
/// `cause` is required by dbt Cloud and must be 1 to 255 characters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TriggerRequest {
    pub cause: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_sha: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure_pull_request_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github_pull_request_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gitlab_merge_request_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub non_native_pull_request_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_override: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dbt_version_override: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads_override: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_name_override: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generate_docs_override: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds_override: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps_override: Option<Vec<String>>,
}

/// The longest `cause` dbt Cloud accepts.
pub const MAX_CAUSE_CHARS: usize = 255;

/// A dbt Cloud webhook delivery (`job.run.started`, `job.run.completed`, `job.run.errored`). Ids
/// inside `data` are strings on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookEvent {
    pub account_id: i64,
    pub event_id: String,
    pub timestamp: String,
    pub event_type: String,
    #[serde(default)]
    pub webhook_name: Option<String>,
    pub data: WebhookRunData,
}

/// The `data` object of a webhook delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookRunData {
    pub job_id: String,
    #[serde(default)]
    pub job_name: Option<String>,
    pub run_id: String,
    #[serde(default)]
    pub environment_id: Option<String>,
    #[serde(default)]
    pub environment_name: Option<String>,
    #[serde(default)]
    pub dbt_version: Option<String>,
    #[serde(default)]
    pub project_name: Option<String>,
    #[serde(default)]
    pub project_id: Option<String>,
    #[serde(default)]
    pub run_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_finished_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_errored_at: Option<String>,
    #[serde(default)]
    pub run_status: Option<String>,
    #[serde(default)]
    pub run_status_code: Option<i64>,
    #[serde(default)]
    pub run_status_message: Option<String>,
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_run_decodes_and_unknown_status_is_not_terminal() {
        let run: Run =
            serde_json::from_str(r#"{"id": 70403110257794, "status": 42, "new_field": 1}"#)
                .unwrap();
        assert_eq!(run.id, RunId(70_403_110_257_794));
        assert_eq!(run.status, RunStatus::Unknown(42));
        assert!(!run.status.is_terminal());
        assert!(run.blocked_by.is_empty());
    }

    #[test]
    fn trigger_request_writes_only_what_is_set() {
        let body = TriggerRequest {
            cause: "baton".into(),
            threads_override: Some(8),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"cause":"baton","threads_override":8}"#
        );
    }
}
