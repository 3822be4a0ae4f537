//! Query parameters of the calls the daemon makes: `include_related` values and the `runs/` filters,
//! written the way dbt Cloud's own documentation writes them (JSON arrays in a query value).

use crate::dbt_cloud::wire::RunStatus;
use crate::ids::{EnvironmentId, JobId, ProjectId, RunId};

/// The most runs dbt Cloud returns in one page (and the most ids one `pk__in` call asks for).
pub const MAX_PAGE_SIZE: u32 = 100;

/// Related objects a run answer can embed (`include_related`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Related {
    Trigger,
    Job,
    RunSteps,
    Environment,
    DebugLogs,
}

impl Related {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Trigger => "trigger",
            Self::Job => "job",
            Self::RunSteps => "run_steps",
            Self::Environment => "environment",
            Self::DebugLogs => "debug_logs",
        }
    }
}

/// Filters of `GET runs/`. Unset fields are not sent. `limit` is the page size (at most 100, the
/// default); `list_runs` walks every page from `offset`, `list_runs_page` fetches one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListRuns {
    pub job_definition_id: Option<JobId>,
    pub environment_id: Option<EnvironmentId>,
    pub project_id: Option<ProjectId>,
    pub status: Option<RunStatus>,
    pub status_in: Vec<RunStatus>,
    pub pk_in: Vec<RunId>,
    /// `id` (ascending, dbt Cloud's default), `-id` for newest first, `created_at`, `finished_at`.
    pub order_by: Option<String>,
    pub limit: Option<u32>,
    pub offset: Option<u32>,
    pub include_related: Vec<Related>,
}

impl ListRuns {
    /// The newest runs of one job first, with their triggers: the reconciliation query.
    pub fn newest_of_job(job: JobId) -> Self {
        Self {
            job_definition_id: Some(job),
            order_by: Some("-id".to_string()),
            include_related: vec![Related::Trigger],
            ..Self::default()
        }
    }

    /// The page size actually sent: `limit` clamped to 1..=100.
    pub fn page_size(&self) -> u32 {
        self.limit.unwrap_or(MAX_PAGE_SIZE).clamp(1, MAX_PAGE_SIZE)
    }

    /// `(name, value)` pairs in the order they are sent.
    pub fn query_pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = Vec::new();
        if let Some(job) = self.job_definition_id {
            pairs.push(("job_definition_id", job.to_string()));
        }
        if let Some(environment) = self.environment_id {
            pairs.push(("environment_id", environment.to_string()));
        }
        if let Some(project) = self.project_id {
            pairs.push(("project_id", project.to_string()));
        }
        if let Some(status) = self.status {
            pairs.push(("status", status.code().to_string()));
        }
        if !self.status_in.is_empty() {
            let codes: Vec<i64> = self.status_in.iter().map(|s| s.code()).collect();
            pairs.push(("status__in", json_list(&codes)));
        }
        if !self.pk_in.is_empty() {
            let ids: Vec<i64> = self.pk_in.iter().map(|id| id.0).collect();
            pairs.push(("pk__in", json_list(&ids)));
        }
        if let Some(order_by) = &self.order_by {
            pairs.push(("order_by", order_by.clone()));
        }
        pairs.push(("limit", self.page_size().to_string()));
        pairs.push(("offset", self.offset.unwrap_or(0).to_string()));
        if let Some(related) = include_related_value(&self.include_related) {
            pairs.push(("include_related", related));
        }
        pairs
    }
}

/// `["trigger","job"]`, or nothing for an empty list.
pub fn include_related_value(related: &[Related]) -> Option<String> {
    if related.is_empty() {
        return None;
    }
    let names: Vec<&str> = related.iter().map(|r| r.as_str()).collect();
    Some(serde_json::Value::from(names).to_string())
}

fn json_list(values: &[i64]) -> String {
    serde_json::Value::from(values.to_vec()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_lists_as_json_arrays_and_clamps_the_page() {
        let query = ListRuns {
            job_definition_id: Some(JobId(7)),
            status_in: vec![RunStatus::Queued, RunStatus::Running],
            pk_in: vec![RunId(70_403_110_257_794), RunId(2)],
            limit: Some(500),
            include_related: vec![Related::Trigger, Related::Job],
            ..ListRuns::default()
        };
        let pairs = query.query_pairs();
        assert_eq!(
            pairs,
            vec![
                ("job_definition_id", "7".to_string()),
                ("status__in", "[1,3]".to_string()),
                ("pk__in", "[70403110257794,2]".to_string()),
                ("limit", "100".to_string()),
                ("offset", "0".to_string()),
                ("include_related", r#"["trigger","job"]"#.to_string()),
            ]
        );
    }
}
