//! Jobs named instead of numbered: each step's `job_name` (with its optional project and
//! environment) is looked up through its account's jobs list with dbt Cloud's own filters, and
//! exactly one job of exactly that name must answer. None, or several, is an error that lists what
//! was found; a job renamed or deleted is reported, never guessed. When dbt Cloud cannot be asked
//! (an outage at a restart), the id stored by the last resolution stands in, so scheduling goes on.

use super::client::DbtCloudClient;
use super::wire::Job;
use crate::ids::{AccountName, JobId};
use crate::model::pipeline::{JobRef, Pipeline};
use std::collections::BTreeMap;

/// The store's key of a job reference: account, project, environment and name (`*` for a filter
/// not given), so the same name in two accounts or projects is two entries.
pub fn canonical_key(account: &AccountName, job: &JobRef) -> String {
    let or_any = |v: Option<i64>| v.map_or("*".to_string(), |v| v.to_string());
    format!(
        "{account}/{}/{}/{}",
        or_any(job.project_id.map(|p| p.0)),
        or_any(job.environment_id.map(|e| e.0)),
        job.name
    )
}

/// What one job reference came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// Exactly one job carries the name.
    Resolved(JobId),
    /// dbt Cloud could not be asked; the id from the last resolution stands in.
    Stored { id: JobId, error: String },
    /// No job of that exact name (`near`: jobs whose name only contains it).
    Missing { near: Vec<String> },
    /// Several jobs carry the name.
    Ambiguous { candidates: Vec<String> },
    /// dbt Cloud could not be asked and no id was ever stored.
    Unreachable { error: String },
}

impl Found {
    /// What was found, in words: `None` when exactly one job answered (or a stored id stood in).
    pub fn problem(&self, job: &JobRef, account: &AccountName) -> Option<String> {
        let scope = scope(job);
        match self {
            Found::Resolved(_) | Found::Stored { .. } => None,
            Found::Missing { near } => Some(format!(
                "no job named `{}` in account `{account}`{scope}{}",
                job.name,
                if near.is_empty() {
                    String::new()
                } else {
                    format!("; names containing it: {}", near.join("; "))
                }
            )),
            Found::Ambiguous { candidates } => Some(format!(
                "{} jobs are named `{}` in account `{account}`{scope}: {}; add `project_id:` or `environment_id:` to the step to pick one",
                candidates.len(),
                job.name,
                candidates.join("; ")
            )),
            Found::Unreachable { error } => Some(format!(
                "cannot resolve job `{}` in account `{account}`: dbt Cloud did not answer ({error}) and no id is stored from an earlier resolution",
                job.name
            )),
        }
    }
}

/// A job as an error message lists it.
fn describe(job: &Job) -> String {
    let or_unknown = |v: Option<i64>| v.map_or("?".to_string(), |v| v.to_string());
    format!(
        "job {} `{}` (project {}, environment {})",
        job.id,
        job.name.as_deref().unwrap_or(""),
        or_unknown(job.project_id.map(|p| p.0)),
        or_unknown(job.environment_id.map(|e| e.0))
    )
}

/// Looks one reference up in its account.
pub async fn look_up(client: &DbtCloudClient, job: &JobRef, stored: Option<JobId>) -> Found {
    match client
        .jobs_named(&job.name, job.project_id, job.environment_id)
        .await
    {
        Ok(jobs) => {
            let (exact, near): (Vec<&Job>, Vec<&Job>) = jobs
                .iter()
                .partition(|j| j.name.as_deref() == Some(job.name.as_str()));
            match exact.as_slice() {
                [one] => Found::Resolved(one.id),
                [] => Found::Missing {
                    near: near.into_iter().take(5).map(describe).collect(),
                },
                several => Found::Ambiguous {
                    candidates: several.iter().map(|j| describe(j)).collect(),
                },
            }
        }
        Err(e) => match stored {
            Some(id) => Found::Stored {
                id,
                error: e.to_string(),
            },
            None => Found::Unreachable {
                error: e.to_string(),
            },
        },
    }
}

/// Every job reference of the pipelines, resolved: fills in each step's `job_id` and returns
/// the ids to store (key: `canonical_key`), or every problem in words.
pub async fn resolve_job_names(
    clients: &BTreeMap<AccountName, DbtCloudClient>,
    pipelines: &mut [Pipeline],
    stored: &BTreeMap<String, JobId>,
) -> Result<BTreeMap<String, JobId>, Vec<String>> {
    // Each distinct reference is asked once, however many steps share it.
    let mut wanted: BTreeMap<String, (AccountName, JobRef)> = BTreeMap::new();
    for p in pipelines.iter() {
        for s in &p.steps {
            if let Some(job) = &s.job_ref {
                wanted
                    .entry(canonical_key(&s.account, job))
                    .or_insert_with(|| (s.account.clone(), JobRef::clone(job)));
            }
        }
    }
    let mut ids = BTreeMap::new();
    let mut problems = Vec::new();
    for (key, (account, job)) in &wanted {
        let Some(client) = clients.get(account) else {
            problems.push(format!(
                "job `{}`: no dbt Cloud account `{account}` in the daemon config",
                job.name
            ));
            continue;
        };
        match look_up(client, job, stored.get(key).copied()).await {
            Found::Resolved(id) => {
                ids.insert(key.clone(), id);
            }
            Found::Stored { id, error } => {
                tracing::warn!(job = %job.name, account = %account, id = id.0, error = %error, "cannot reach dbt Cloud to resolve a job name; using the id stored by the last resolution");
                ids.insert(key.clone(), id);
            }
            other => problems.extend(other.problem(job, account)),
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    for p in pipelines.iter_mut() {
        for s in p.steps.iter_mut() {
            if let Some(job) = &s.job_ref {
                if let Some(id) = ids.get(&canonical_key(&s.account, job)) {
                    s.job_id = *id;
                }
            }
        }
    }
    Ok(ids)
}

/// " (project 1, environment 2)", or nothing without filters.
fn scope(job: &JobRef) -> String {
    let mut parts = Vec::new();
    if let Some(p) = job.project_id {
        parts.push(format!("project {p}"));
    }
    if let Some(e) = job.environment_id {
        parts.push(format!("environment {e}"));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ProjectId;

    #[test]
    fn keys_tell_accounts_projects_and_filters_apart() {
        let job = JobRef {
            name: "[nightly] marts".into(),
            project_id: Some(ProjectId(7)),
            environment_id: None,
        };
        assert_eq!(
            canonical_key(&AccountName::default(), &job),
            "default/7/*/[nightly] marts"
        );
        assert_ne!(
            canonical_key(&AccountName("emea".into()), &job),
            canonical_key(&AccountName::default(), &job)
        );
    }
}
