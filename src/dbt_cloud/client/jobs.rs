//! Listing jobs by name: `GET jobs/` with dbt Cloud's own filters (`name__icontains`,
//! `project_id`, `environment_id`), walking `limit`/`offset` pages until `total_count`.

use super::query::MAX_PAGE_SIZE;
use super::DbtCloudClient;
use crate::dbt_cloud::error::ApiError;
use crate::dbt_cloud::wire::Job;
use crate::ids::{EnvironmentId, ProjectId};
use reqwest::Method;
use std::collections::HashSet;

/// Pages read at most for one name: a name contained in thousands of job names is not one a
/// pipeline should use.
const MAX_PAGES: u32 = 50;

impl DbtCloudClient {
    /// Every job whose name contains `name` (case-insensitively, as dbt Cloud filters), within the
    /// project and environment when given. The caller picks the exact matches.
    pub async fn jobs_named(
        &self,
        name: &str,
        project: Option<ProjectId>,
        environment: Option<EnvironmentId>,
    ) -> Result<Vec<Job>, ApiError> {
        let mut jobs = Vec::new();
        let mut seen = HashSet::new();
        let mut offset: u64 = 0;
        for _ in 0..MAX_PAGES {
            let mut url = self.url(&["jobs", ""]);
            {
                let mut pairs = url.query_pairs_mut();
                pairs.append_pair("name__icontains", name);
                if let Some(p) = project {
                    pairs.append_pair("project_id", &p.to_string());
                }
                if let Some(e) = environment {
                    pairs.append_pair("environment_id", &e.to_string());
                }
                pairs.append_pair("order_by", "id");
                pairs.append_pair("limit", &MAX_PAGE_SIZE.to_string());
                pairs.append_pair("offset", &offset.to_string());
            }
            let body = self.call(Method::GET, url, None).await?;
            let (page, extra) = self.decode::<Vec<Job>>(&body, "a list of jobs")?;
            let received = page.len() as u64;
            let before = jobs.len();
            jobs.extend(page.into_iter().filter(|j| seen.insert(j.id)));
            offset += received;
            let total = extra
                .and_then(|e| e.pagination)
                .map_or(offset, |p| p.total_count);
            if jobs.len() == before || offset >= total {
                break;
            }
        }
        Ok(jobs)
    }
}
