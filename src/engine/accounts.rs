//! Which dbt Cloud account each action goes to: a step's job lives in the account its definition
//! names (`account:`, `default` when absent), so an attempt's calls (trigger, reconcile, cancel,
//! failure details) go to that account and a poll is split into one batch per account. The
//! in-flight cap is counted per account too.

use super::event::Action;
use super::state::{AttemptRef, PipelineRun};
use super::Engine;
use crate::ids::{AccountName, RunId};
use std::collections::BTreeMap;

/// The account of a step of a run (by the definition the run started with).
pub(super) fn account_of_step<'a>(run: &'a PipelineRun, step: &str) -> Option<&'a AccountName> {
    run.definition
        .steps
        .iter()
        .find(|s| s.name.0 == step)
        .map(|s| &s.account)
}

impl Engine {
    /// The account an attempt's calls go to.
    pub fn account_of(&self, at: &AttemptRef) -> AccountName {
        self.state
            .runs
            .get(&at.run)
            .and_then(|r| account_of_step(r, &at.step.0))
            .cloned()
            .unwrap_or_default()
    }

    fn account_of_dbt_run(&self, run: RunId) -> AccountName {
        self.index
            .by_dbt_run
            .get(&run)
            .map(|at| self.account_of(at))
            .unwrap_or_default()
    }

    /// The action addressed to its account; a poll becomes one per account.
    pub fn route(&self, action: Action) -> Vec<(AccountName, Action)> {
        match action {
            Action::Poll { runs } => {
                let mut by_account: BTreeMap<AccountName, Vec<RunId>> = BTreeMap::new();
                for run in runs {
                    by_account
                        .entry(self.account_of_dbt_run(run))
                        .or_default()
                        .push(run);
                }
                by_account
                    .into_iter()
                    .map(|(account, runs)| (account, Action::Poll { runs }))
                    .collect()
            }
            Action::Trigger { ref attempt, .. }
            | Action::Reconcile { ref attempt, .. }
            | Action::Cancel { ref attempt, .. }
            | Action::FetchFailureDetails { ref attempt, .. } => {
                vec![(self.account_of(attempt), action)]
            }
        }
    }

    /// Attempts triggering or running in dbt Cloud, per account.
    pub fn in_flight_by_account(&self) -> BTreeMap<AccountName, usize> {
        let mut counts: BTreeMap<AccountName, usize> = BTreeMap::new();
        for run in self
            .index
            .active
            .iter()
            .filter_map(|id| self.state.runs.get(id))
        {
            for (step, step_run) in &run.steps {
                if step_run.current().is_some_and(|a| a.is_in_flight()) {
                    let account = account_of_step(run, &step.0).cloned().unwrap_or_default();
                    *counts.entry(account).or_default() += 1;
                }
            }
        }
        counts
    }

    /// Whether an account a ready step waited for has room again under `max_in_flight`.
    pub(super) fn blocked_account_has_room(&self) -> bool {
        let counts = self.in_flight_by_account();
        self.passes
            .blocked_accounts
            .iter()
            .any(|a| counts.get(a).copied().unwrap_or(0) < self.config.max_in_flight)
    }
}

#[cfg(test)]
mod tests {
    use crate::engine::event::{Action, Event, OperatorRequest};
    use crate::engine::state::State;
    use crate::engine::{Engine, EngineConfig};
    use crate::ids::{AccountName, JobId};
    use crate::model::pipeline::{
        ConcurrencyPolicy, Pipeline, PipelineName, Step, StepLimits, StepName,
    };
    use chrono::{DateTime, Utc};
    use std::collections::BTreeMap;

    fn step(name: &str, job: i64, account: &str) -> Step {
        Step {
            name: StepName(name.into()),
            job_id: JobId(job),
            job_ref: None,
            depends_on: Vec::new(),
            overrides: BTreeMap::new(),
            limits: StepLimits::default().shared(),
            account: AccountName(account.to_string().into()),
        }
    }

    #[test]
    fn each_account_has_its_own_in_flight_cap_and_its_calls() {
        let p = Pipeline {
            name: PipelineName("p".into()),
            description: None,
            source: "p.yaml".into(),
            schedule: None,
            concurrency: ConcurrencyPolicy::Skip,
            suspended: false,
            cause: None,
            steps: vec![
                step("a1", 1, "default"),
                step("a2", 2, "default"),
                step("b1", 1, "emea"),
            ],
            backfill: None,
            deadline: None,
        };
        let now: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        let config = EngineConfig {
            max_in_flight: 1,
            ..EngineConfig::default()
        };
        let mut e = Engine::new(config, vec![p], State::default(), now).unwrap();
        e.apply(
            Event::Operator(OperatorRequest::TriggerPipeline {
                pipeline: PipelineName("p".into()),
                logical_date: Some(now.into()),
            }),
            now,
        );
        let routed: Vec<(AccountName, String)> = e
            .plan(now)
            .actions
            .into_iter()
            .flat_map(|a| e.route(a))
            .map(|(account, action)| match action {
                Action::Trigger { attempt, .. } => (account, attempt.step.0),
                other => (account, format!("{other:?}")),
            })
            .collect();
        // One trigger per account: the cap of 1 holds `default` to a1, `emea` has its own room.
        assert_eq!(
            routed,
            [
                (AccountName::default(), "a1".to_string()),
                (AccountName("emea".into()), "b1".to_string()),
            ]
        );
        assert_eq!(e.in_flight_by_account().len(), 2);
    }
}
