//! `baton validate --online --config FILE`: every step's job, by id or by name, looked up in its
//! dbt Cloud account, with one line per step saying what was found.

use crate::clock::{SharedClock, SystemClock};
use crate::config::daemon::DaemonConfig;
use crate::dbt_cloud::client::DbtCloudClient;
use crate::dbt_cloud::error::ApiError;
use crate::dbt_cloud::job_names::{look_up, Found};
use crate::ids::AccountName;
use crate::model::pipeline::Pipeline;
use std::collections::BTreeMap;
use std::sync::Arc;

/// One step's job as dbt Cloud knows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct JobCheck {
    pub pipeline: String,
    pub step: String,
    pub account: String,
    pub ok: bool,
    pub found: String,
}

/// Looks every step's job up; `Err` when the accounts' clients cannot be built.
pub async fn check_jobs(
    config: &DaemonConfig,
    pipelines: &[Pipeline],
) -> anyhow::Result<Vec<JobCheck>> {
    let clock: SharedClock = Arc::new(SystemClock);
    let mut clients: BTreeMap<AccountName, DbtCloudClient> = BTreeMap::new();
    for (name, account) in config.all_accounts() {
        let client = super::daemon::account_client(account, clock.clone())
            .map_err(|e| anyhow::anyhow!("account `{name}`: {e:#}"))?;
        clients.insert(name, client);
    }
    let mut checks = Vec::new();
    for p in pipelines {
        for s in &p.steps {
            let Some(client) = clients.get(&s.account) else {
                continue;
            };
            let (ok, found) = match &s.job_ref {
                Some(job) => match look_up(client, job, None).await {
                    Found::Resolved(id) => (true, format!("job `{}` is job {id}", job.name)),
                    other => (false, other.problem(job, &s.account).unwrap_or_default()),
                },
                None => match client.get_job(s.job_id).await {
                    Ok(job) => (
                        true,
                        format!(
                            "job {} is `{}`",
                            s.job_id,
                            job.name.as_deref().unwrap_or("")
                        ),
                    ),
                    Err(ApiError::NotFound { .. }) => {
                        (false, format!("no job {} in the account", s.job_id))
                    }
                    Err(e) => (false, format!("cannot ask dbt Cloud: {e}")),
                },
            };
            checks.push(JobCheck {
                pipeline: p.name.0.clone(),
                step: s.name.0.clone(),
                account: s.account.0.to_string(),
                ok,
                found,
            });
        }
    }
    Ok(checks)
}
