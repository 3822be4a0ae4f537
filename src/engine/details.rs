//! Why a run failed: after an attempt ends in error the engine asks for the run's failed step, its
//! log tail and the failed nodes of `run_results.json`, kept (bounded) on the attempt. The fetch
//! never delays the retry decision; a missing artifact (not written, or not uploaded yet) is asked
//! for again a few times, on the engine's clock.

use super::event::{Action, Plan};
use super::state::{AttemptOutcome, AttemptRef};
use super::{earliest, Engine};
use chrono::{DateTime, Utc};
use serde::Deserialize;

pub use super::event::DetailsFetch;
pub use super::state::{FailureDetails, NodeFailure};

/// Most failed nodes kept per attempt.
pub const MAX_FAILURES: usize = 20;
/// Longest message kept per failed node, in characters.
pub const MAX_MESSAGE_CHARS: usize = 500;
/// Longest log tail kept, in characters.
pub const MAX_LOG_TAIL_CHARS: usize = 2000;
/// How many times the details are asked for while `run_results.json` is missing (upload lag).
pub const MAX_FETCHES: u32 = 5;
/// Time between two fetches while the artifact is missing: five fetches span a minute.
pub const REFETCH_AFTER_SECS: i64 = 15;

impl FailureDetails {
    /// Builds the details from a run's steps and its `run_results.json` (None: 404).
    pub fn from_parts(
        steps: &[crate::dbt_cloud::wire::RunStep],
        run_results: Option<&[u8]>,
    ) -> Self {
        let failed = steps
            .iter()
            .find(|s| s.status == Some(crate::dbt_cloud::wire::RunStatus::Error))
            .or(steps.last());
        let mut details = FailureDetails {
            failed_step: failed.and_then(|s| s.name.clone()),
            log_tail: failed
                .and_then(|s| s.logs.as_deref().or(s.truncated_debug_logs.as_deref()))
                .map(|l| tail(l, MAX_LOG_TAIL_CHARS)),
            ..FailureDetails::default()
        };
        match run_results {
            None => details.run_results_missing = true,
            Some(bytes) => match serde_json::from_slice::<RunResults>(bytes) {
                Ok(results) => {
                    let failed: Vec<NodeFailure> = results
                        .results
                        .into_iter()
                        .filter(|r| matches!(r.status.as_str(), "error" | "fail" | "runtime error"))
                        .map(|r| NodeFailure {
                            unique_id: r.unique_id,
                            status: r.status,
                            message: r.message.map(|m| head(&m, MAX_MESSAGE_CHARS)),
                        })
                        .collect();
                    details.more_failures = failed.len().saturating_sub(MAX_FAILURES);
                    details.failures = failed.into_iter().take(MAX_FAILURES).collect();
                }
                Err(e) => details.note = Some(format!("run_results.json is unreadable: {e}")),
            },
        }
        details
    }

    /// One line for a table: the first failed node and its message, else the failed step.
    pub fn summary(&self) -> String {
        if let Some(first) = self.failures.first() {
            let more = self.failures.len() + self.more_failures - 1;
            let message = first
                .message
                .as_deref()
                .map(|m| m.lines().map(str::trim).collect::<Vec<_>>().join(" "))
                .unwrap_or_default();
            let mut line = format!("{} {}: {message}", first.unique_id, first.status);
            if more > 0 {
                line.push_str(&format!(" (+{more} more)"));
            }
            return line;
        }
        match &self.failed_step {
            Some(step) => format!("step failed: {step}"),
            None => self.note.clone().unwrap_or_default(),
        }
    }
}

#[derive(Deserialize)]
struct RunResults {
    #[serde(default)]
    results: Vec<RunResult>,
}

#[derive(Deserialize)]
struct RunResult {
    #[serde(default)]
    unique_id: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    message: Option<String>,
}

fn head(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

fn tail(text: &str, max: usize) -> String {
    let count = text.chars().count();
    if count <= max {
        return text.to_string();
    }
    let skip = count - max;
    let start = text.char_indices().nth(skip).map_or(0, |(i, _)| i);
    format!("…{}", &text[start..])
}

/// A fetch wanted for an attempt: when, and how many were made.
#[derive(Debug, Clone, Copy)]
pub(super) struct DetailsDue {
    pub at: DateTime<Utc>,
    pub fetches: u32,
}

impl Engine {
    /// Called when an attempt ends: an error is worth explaining.
    pub(super) fn want_details(&mut self, at: &AttemptRef, now: DateTime<Utc>) {
        self.due.details.insert(
            at.clone(),
            DetailsDue {
                at: now,
                fetches: 0,
            },
        );
    }

    /// Attempts that ended in error before a restart and have no details yet.
    pub(super) fn details_missing_after_restart(&mut self, now: DateTime<Utc>) {
        let mut wanted = Vec::new();
        for run in self.state.runs.values() {
            for (step, step_run) in &run.steps {
                for a in &step_run.attempts {
                    if a.outcome == Some(AttemptOutcome::Error)
                        && a.run_id.is_some()
                        && a.details.is_none()
                    {
                        wanted.push(AttemptRef {
                            run: run.id.clone(),
                            step: step.clone(),
                            number: a.number,
                        });
                    }
                }
            }
        }
        for at in wanted {
            self.want_details(&at, now);
        }
    }

    pub(super) fn plan_details(&mut self, now: DateTime<Utc>, plan: &mut Plan) {
        let due: Vec<AttemptRef> = self
            .due
            .details
            .iter()
            .filter(|(at, _)| !self.in_flight.details.contains(*at))
            .filter_map(|(at, due)| {
                if due.at <= now {
                    Some(at.clone())
                } else {
                    plan.wake_at = earliest(plan.wake_at, due.at);
                    None
                }
            })
            .collect();
        for at in due {
            let run = self
                .state
                .runs
                .get(&at.run)
                .and_then(|r| r.steps.get(&at.step))
                .and_then(|s| s.attempts.iter().find(|a| a.number == at.number))
                .and_then(|a| a.run_id);
            let Some(run) = run else {
                self.due.details.remove(&at);
                continue;
            };
            self.in_flight.details.insert(at.clone());
            plan.actions
                .push(Action::FetchFailureDetails { attempt: at, run });
        }
    }

    pub(super) fn on_details(&mut self, at: AttemptRef, fetch: DetailsFetch, now: DateTime<Utc>) {
        self.in_flight.details.remove(&at);
        let Some(due) = self.due.details.get_mut(&at) else {
            return;
        };
        due.fetches += 1;
        let fetches = due.fetches;
        let again = now + chrono::Duration::seconds(REFETCH_AFTER_SECS);
        let (details, retry) = match fetch {
            Fetched(details) => {
                let retry = details.run_results_missing && fetches < MAX_FETCHES;
                (Some(details), retry)
            }
            Failed(message) => {
                let retry = fetches < MAX_FETCHES;
                let details = (!retry).then(|| FailureDetails {
                    note: Some(format!("could not fetch the failure details: {message}")),
                    ..FailureDetails::default()
                });
                (details, retry)
            }
        };
        if retry {
            due.at = again;
        } else {
            self.due.details.remove(&at);
        }
        if let Some(details) = details {
            if let Some(attempt) = self.attempt_mut(&at) {
                attempt.details = Some(details);
                self.mark_changed(at.run.clone());
            }
        }
    }
}

use DetailsFetch::{Failed, Fetched};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dbt_cloud::wire::RunStep;

    fn step(name: &str, status: i64, logs: &str) -> RunStep {
        serde_json::from_value(serde_json::json!({"name": name, "status": status, "logs": logs}))
            .unwrap()
    }

    #[test]
    fn keeps_failed_nodes_bounded_and_names_the_failed_step() {
        let results: Vec<_> = (0..30)
            .map(|i| serde_json::json!({"unique_id": format!("model.p.m{i}"), "status": if i % 2 == 0 {"error"} else {"success"}, "message": "x".repeat(900)}))
            .collect();
        let body = serde_json::to_vec(&serde_json::json!({"results": results})).unwrap();
        let steps = vec![
            step("Clone git repository", 10, "ok"),
            step("Invoke dbt with `dbt build`", 20, &"line\n".repeat(1000)),
        ];
        let d = FailureDetails::from_parts(&steps, Some(&body));
        assert_eq!(
            d.failed_step.as_deref(),
            Some("Invoke dbt with `dbt build`")
        );
        assert_eq!(d.failures.len(), 15);
        assert_eq!(d.more_failures, 0);
        assert!(d.failures[0].message.as_ref().unwrap().chars().count() <= MAX_MESSAGE_CHARS + 1);
        assert!(d.log_tail.as_ref().unwrap().chars().count() <= MAX_LOG_TAIL_CHARS + 1);
        assert!(
            d.summary().starts_with("model.p.m0 error"),
            "{}",
            d.summary()
        );
        let missing = FailureDetails::from_parts(&steps, None);
        assert!(missing.run_results_missing);
    }
}
