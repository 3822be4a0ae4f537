//! Listing runs: one page, every page (walking `offset` until `total_count`), and the batched
//! `pk__in` look-up that checks the answer holds exactly the runs asked for.

use super::query::{ListRuns, MAX_PAGE_SIZE};
use super::{warn_unknown_status, DbtCloudClient};
use crate::dbt_cloud::error::ApiError;
use crate::dbt_cloud::wire::{Pagination, Run};
use crate::ids::RunId;
use reqwest::Method;
use std::collections::{BTreeSet, HashMap, HashSet};

impl DbtCloudClient {
    /// One page of `GET runs/`. When the answer carries no pagination, the page counts as the last.
    pub async fn list_runs_page(
        &self,
        query: &ListRuns,
    ) -> Result<(Vec<Run>, Pagination), ApiError> {
        let mut url = self.url(&["runs", ""]);
        {
            let mut pairs = url.query_pairs_mut();
            for (name, value) in query.query_pairs() {
                pairs.append_pair(name, &value);
            }
        }
        let body = self.call(Method::GET, url, None).await?;
        let (runs, extra) = self.decode::<Vec<Run>>(&body, "a list of runs")?;
        runs.iter().for_each(warn_unknown_status);
        let offset = u64::from(query.offset.unwrap_or(0));
        let pagination = extra.and_then(|e| e.pagination).unwrap_or(Pagination {
            count: runs.len() as u64,
            total_count: offset + runs.len() as u64,
        });
        Ok((runs, pagination))
    }

    /// Every run matching `query` from its `offset` on, `limit` (at most 100) a page, until
    /// `total_count`. Stops early on an empty page or a page with nothing new (a server ignoring
    /// `offset` must not loop us forever).
    pub async fn list_runs(&self, query: &ListRuns) -> Result<Vec<Run>, ApiError> {
        let page_size = query.page_size();
        let mut offset = query.offset.unwrap_or(0);
        let mut runs = Vec::new();
        let mut seen = HashSet::new();
        loop {
            let page_query = ListRuns {
                limit: Some(page_size),
                offset: Some(offset),
                ..query.clone()
            };
            let (page, pagination) = self.list_runs_page(&page_query).await?;
            let received = u32::try_from(page.len()).unwrap_or(u32::MAX);
            let before = runs.len();
            runs.extend(page.into_iter().filter(|run| seen.insert(run.id)));
            if runs.len() == before {
                break;
            }
            offset = offset.saturating_add(received);
            if u64::from(offset) >= pagination.total_count {
                break;
            }
        }
        Ok(runs)
    }

    /// The runs with these ids (duplicates asked once), in the order asked, through `pk__in` with at
    /// most 100 ids a call. Fails with `ApiError::RunSetMismatch` when an answer is missing a run or
    /// holds one not asked for, so the caller can fall back to `get_run` for each.
    pub async fn runs_by_ids(&self, ids: &[RunId]) -> Result<Vec<Run>, ApiError> {
        let mut unique = Vec::new();
        let mut asked = HashSet::new();
        for id in ids {
            if asked.insert(*id) {
                unique.push(*id);
            }
        }
        let mut found: HashMap<RunId, Run> = HashMap::with_capacity(unique.len());
        for chunk in unique.chunks(MAX_PAGE_SIZE as usize) {
            let query = ListRuns {
                pk_in: chunk.to_vec(),
                limit: Some(MAX_PAGE_SIZE),
                ..ListRuns::default()
            };
            let (page, _) = self.list_runs_page(&query).await?;
            check_exactly(chunk, &page)?;
            found.extend(page.into_iter().map(|run| (run.id, run)));
        }
        Ok(unique.iter().filter_map(|id| found.remove(id)).collect())
    }
}

/// The page must hold each id of `asked` once and nothing else.
fn check_exactly(asked: &[RunId], page: &[Run]) -> Result<(), ApiError> {
    let asked: BTreeSet<RunId> = asked.iter().copied().collect();
    let got: BTreeSet<RunId> = page.iter().map(|run| run.id).collect();
    if got == asked && page.len() == asked.len() {
        return Ok(());
    }
    let missing: Vec<RunId> = asked.difference(&got).copied().collect();
    let unexpected: Vec<RunId> = got.difference(&asked).copied().collect();
    tracing::warn!(
        missing = ?missing, unexpected = ?unexpected, duplicates = page.len() != got.len(),
        "dbt Cloud's pk__in answer does not hold exactly the runs asked for"
    );
    Err(ApiError::RunSetMismatch {
        missing,
        unexpected,
    })
}
