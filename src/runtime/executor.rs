//! Carries out the engine's actions against dbt Cloud (each with its account's client) and turns
//! each answer into an event. Only here does the daemon talk to dbt Cloud.

use crate::dbt_cloud::client::{DbtCloudClient, ListRuns, Related};
use crate::dbt_cloud::error::{ApiError, TriggerError};
use crate::dbt_cloud::wire::Run;
use crate::engine::details::{DetailsFetch, FailureDetails};
use crate::engine::event::{Action, Event, TriggerResult};
use crate::engine::state::AttemptKey;
use crate::ids::{JobId, RunId};

use crate::engine::event::POLL_PAGE as POLL_BATCH;

/// Performs one action and reports what came of it.
pub async fn execute(client: &DbtCloudClient, action: Action) -> Event {
    match action {
        Action::Trigger {
            attempt,
            job,
            request,
            rerun_of,
        } => {
            let result = match rerun_of {
                Some(failed_run) => match is_latest_run(client, job, failed_run).await {
                    Ok(true) => client.rerun(job).await,
                    Ok(false) => client.trigger(job, &request).await,
                    Err(message) => {
                        return Event::Triggered {
                            attempt,
                            result: TriggerResult::NotSent {
                                message,
                                retry_after: None,
                            },
                        }
                    }
                },
                None => client.trigger(job, &request).await,
            };
            Event::Triggered {
                attempt,
                result: match result {
                    Ok(run) => TriggerResult::Accepted(Box::new(run)),
                    Err(TriggerError::Rejected(e)) => TriggerResult::Rejected {
                        message: e.to_string(),
                    },
                    Err(TriggerError::Ambiguous(e)) => TriggerResult::Ambiguous {
                        message: e.to_string(),
                    },
                    Err(TriggerError::NotSent(e)) => TriggerResult::NotSent {
                        retry_after: e.retry_after(),
                        message: e.to_string(),
                    },
                },
            }
        }
        Action::Reconcile {
            attempt,
            job,
            key,
            rerun_of,
        } => {
            let earlier: Vec<AttemptKey> = (1..attempt.number)
                .map(|n| AttemptKey::derive(&attempt.run, &attempt.step, n))
                .collect();
            match newest_runs_until(client, job, &key, rerun_of).await {
                Ok(runs) => Event::Reconciled {
                    found: find_attempt_run(runs, &key, rerun_of, &earlier).map(Box::new),
                    attempt,
                },
                Err(e) => Event::ReconcileFailed {
                    attempt,
                    message: e.to_string(),
                },
            }
        }
        Action::Poll { runs } => poll(client, &runs).await,
        Action::Cancel { attempt, run } => match client.cancel_run(run).await {
            Ok(run) => Event::CancelAcknowledged {
                attempt,
                run: Box::new(run),
            },
            Err(e) => Event::CancelFailed {
                attempt,
                message: e.to_string(),
            },
        },
        Action::FetchFailureDetails { attempt, run } => Event::FailureDetails {
            attempt,
            fetch: fetch_failure_details(client, run).await,
        },
    }
}

/// The answer to an action for an account the daemon has no client for (a run in flight whose
/// definition names an account since removed from the config): a definite refusal, never a guess.
pub fn unroutable(action: Action, account: &crate::ids::AccountName) -> Event {
    let message = format!("no dbt Cloud account `{account}` in the daemon config");
    match action {
        Action::Trigger { attempt, .. } => Event::Triggered {
            attempt,
            result: TriggerResult::Rejected { message },
        },
        Action::Reconcile { attempt, .. } => Event::ReconcileFailed { attempt, message },
        Action::Poll { .. } => Event::PollFailed { message },
        Action::Cancel { attempt, .. } => Event::CancelFailed { attempt, message },
        Action::FetchFailureDetails { attempt, .. } => Event::FailureDetails {
            attempt,
            fetch: DetailsFetch::Failed(message),
        },
    }
}

/// The run's steps (for the failed one's name and log) and its `run_results.json`; a 404 on the
/// artifact means "not written, or not uploaded yet", which the engine asks about again later.
async fn fetch_failure_details(client: &DbtCloudClient, run: RunId) -> DetailsFetch {
    let steps = match client.get_run(run, &[Related::RunSteps]).await {
        Ok(run) => run.run_steps,
        Err(e) => return DetailsFetch::Failed(e.to_string()),
    };
    match client.get_artifact(run, "run_results.json", None).await {
        Ok(bytes) => DetailsFetch::Fetched(FailureDetails::from_parts(&steps, Some(&bytes))),
        Err(ApiError::NotFound { .. }) => {
            DetailsFetch::Fetched(FailureDetails::from_parts(&steps, None))
        }
        Err(e) => DetailsFetch::Failed(e.to_string()),
    }
}

/// Pages of the job's newest runs the reconciliation reads at most: more than a page of runs may
/// have been created since the attempt's trigger (a job other schedulers share, a long outage).
const RECONCILE_PAGES: u32 = 10;

/// The job's newest runs, page after page, until one carries `key`, the pages run out, a page
/// reaches back past `rerun_of` (a rerun cannot be older than the run it resumes), or
/// `RECONCILE_PAGES` pages were read.
async fn newest_runs_until(
    client: &DbtCloudClient,
    job: JobId,
    key: &AttemptKey,
    rerun_of: Option<RunId>,
) -> Result<Vec<Run>, crate::dbt_cloud::error::ApiError> {
    let mut query = ListRuns::newest_of_job(job);
    let page_size = query.page_size();
    let mut runs = Vec::new();
    for page in 0..RECONCILE_PAGES {
        query.offset = (page > 0).then_some(page * page_size);
        let (batch, _) = client.list_runs_page(&query).await?;
        let full = batch.len() as u32 >= page_size;
        let carries_key = batch.iter().any(|r| {
            r.trigger
                .as_ref()
                .and_then(|t| t.cause.as_deref())
                .is_some_and(|c| c.contains(&key.0))
        });
        let past_failed = rerun_of.is_some_and(|f| batch.iter().any(|r| r.id <= f));
        runs.extend(batch);
        if carries_key || past_failed || !full {
            break;
        }
    }
    Ok(runs)
}

/// Whether `run` is still the job's newest run: the condition for a rerun from the failed step.
async fn is_latest_run(client: &DbtCloudClient, job: JobId, run: RunId) -> Result<bool, String> {
    let query = ListRuns {
        limit: Some(1),
        include_related: Vec::new(),
        ..ListRuns::newest_of_job(job)
    };
    let (runs, _) = client
        .list_runs_page(&query)
        .await
        .map_err(|e| e.to_string())?;
    Ok(runs.first().map(|r| r.id) == Some(run))
}

/// The run the attempt created: the one whose cause carries its key. A rerun sends no cause, and
/// a run resumed from its failed step keeps the cause of the run it resumes (the key of an earlier
/// attempt of the same step), so for an attempt that may have rerun, the job's oldest run after
/// the failed one whose cause carries no key or only such an earlier key is taken instead (baton
/// is assumed to be the job's only scheduler). `earlier` holds the step's earlier attempt keys.
fn find_attempt_run(
    runs: Vec<Run>,
    key: &AttemptKey,
    rerun_of: Option<RunId>,
    earlier: &[AttemptKey],
) -> Option<Run> {
    let cause = |r: &Run| r.trigger.as_ref().and_then(|t| t.cause.clone());
    if let Some(run) = runs
        .iter()
        .find(|r| cause(r).is_some_and(|c| c.contains(&key.0)))
    {
        return Some(run.clone());
    }
    let failed = rerun_of?;
    let resumable = |r: &Run| match cause(r) {
        Some(c) if c.contains("[bt-") => earlier.iter().any(|k| c.contains(&k.0)),
        _ => true,
    };
    runs.into_iter()
        .filter(|r| r.id > failed && resumable(r))
        .min_by_key(|r| r.id)
}

/// One `pk__in` call per 100 runs; a batch the server rejects or answers wrongly falls back to one
/// GET per run.
async fn poll(client: &DbtCloudClient, ids: &[RunId]) -> Event {
    let mut seen = Vec::with_capacity(ids.len());
    let mut failures = Vec::new();
    for chunk in ids.chunks(POLL_BATCH) {
        match client.runs_by_ids(chunk).await {
            Ok(runs) => seen.extend(runs),
            Err(batch_error) => {
                tracing::warn!(error = %batch_error, runs = chunk.len(), "batched poll failed; falling back to one request per run");
                for id in chunk {
                    match client.get_run(*id, &[] as &[Related]).await {
                        Ok(run) => seen.push(run),
                        Err(e) => failures.push(format!("run {id}: {e}")),
                    }
                }
            }
        }
    }
    if seen.is_empty() && !failures.is_empty() {
        return Event::PollFailed {
            message: failures.join("; "),
        };
    }
    if !failures.is_empty() {
        tracing::warn!(failures = %failures.join("; "), "some runs could not be read this poll");
    }
    Event::RunsSeen { runs: seen }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(id: i64, cause: Option<&str>) -> Run {
        serde_json::from_value(serde_json::json!({
            "id": id, "status": 1,
            "trigger": cause.map(|c| serde_json::json!({"cause": c})),
        }))
        .unwrap()
    }

    #[test]
    fn reconciliation_finds_the_key_or_for_a_rerun_the_next_run_without_a_key() {
        let key = AttemptKey("bt-0011223344556677".into());
        let runs = vec![
            run(12, Some("other [bt-ffffffffffffffff]")),
            run(11, Some("baton nightly [bt-0011223344556677]")),
            run(10, None),
        ];
        assert_eq!(
            find_attempt_run(runs.clone(), &key, None, &[]).map(|r| r.id),
            Some(RunId(11))
        );
        let other = AttemptKey("bt-aaaaaaaaaaaaaaaa".into());
        assert_eq!(find_attempt_run(runs.clone(), &other, None, &[]), None);
        let after_failure = vec![run(21, Some("Rerun")), run(20, None)];
        assert_eq!(
            find_attempt_run(after_failure, &other, Some(RunId(20)), &[]).map(|r| r.id),
            Some(RunId(21))
        );
        assert_eq!(find_attempt_run(runs, &other, Some(RunId(12)), &[]), None);
    }

    #[test]
    fn a_run_resumed_from_failure_is_found_by_the_earlier_attempts_key_it_inherited() {
        let first = AttemptKey("bt-1111111111111111".into());
        let second = AttemptKey("bt-2222222222222222".into());
        // Run 31 resumed the failed run 30 and kept its cause; run 32 belongs to another step.
        let runs = vec![
            run(32, Some("other step [bt-ffffffffffffffff]")),
            run(31, Some("nightly [bt-1111111111111111]")),
            run(30, Some("nightly [bt-1111111111111111]")),
        ];
        assert_eq!(
            find_attempt_run(runs.clone(), &second, Some(RunId(30)), &[first]).map(|r| r.id),
            Some(RunId(31))
        );
        assert_eq!(
            find_attempt_run(runs, &second, Some(RunId(30)), &[]).map(|r| r.id),
            None,
            "without the earlier key the inherited cause looks like another attempt's run"
        );
    }
}
