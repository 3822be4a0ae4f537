//! "Why is this not running?": one sentence, and a machine-readable reason, for a pipeline or one
//! of its steps, read from the engine's state (pure, like the rest of the engine). Deciding is
//! apart from wording: `classify` finds the `Wait` and the facts it rests on, `sentence` words it.

use super::state::{
    Attempt, AttemptPhase, CancelReason, PipelineRun, PipelineRunId, PipelineRunState, RunOrigin,
    StepState,
};
use super::Engine;
use crate::dbt_cloud::wire::RunStatus;
use crate::ids::AccountName;
use crate::model::pipeline::{ConcurrencyPolicy, PipelineName, StepName};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Serialize;
use std::path::Path;

/// What a pipeline or step is waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WhyReason {
    /// `suspended: true` in its file.
    Suspended,
    /// Paused by an operator.
    Paused,
    /// Nothing active: waiting for the next tick.
    Schedule,
    /// Nothing active and no schedule: runs only when triggered.
    Unscheduled,
    /// A queued run waits for the previous run of the pipeline (concurrency policy).
    ConcurrencyLimit,
    /// A queued backfill run waits for room under its backfill's `max_active`.
    BackfillLimit,
    /// The step waits for an upstream step.
    Upstream,
    /// The step's last attempt failed; the next starts at `until`.
    RetryBackoff,
    /// The step is ready but the account's cap on attempts in flight is reached.
    InFlightCap,
    /// The trigger is being sent (or its fate reconciled); the request budget may hold it.
    Triggering,
    /// Waiting for the account's request budget (set by the API, which sees the budget).
    RequestBudget,
    /// The run waits in dbt Cloud's queue (status 1 or 2), maybe behind `blocked_by`.
    DbtCloudQueue,
    /// The run is running in dbt Cloud.
    Running,
    /// baton asked dbt Cloud to cancel the run and waits for status 30.
    Cancelling,
    /// The step or pipeline run is over.
    Finished,
}

/// The answer to `baton why`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Why {
    pub reason: WhyReason,
    pub sentence: String,
    pub pipeline: PipelineName,
    pub run: Option<String>,
    pub step: Option<StepName>,
    /// When the wait ends, when known (next tick, retry time).
    pub until: Option<DateTime<Utc>>,
    pub dbt_run: Option<i64>,
    pub href: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WhyError {
    #[error("no pipeline named `{0}` is loaded")]
    UnknownPipeline(PipelineName),
    #[error("pipeline `{pipeline}` has no step `{step}`")]
    UnknownStep {
        pipeline: PipelineName,
        step: StepName,
    },
}

/// An instant a person reads: to the second, in UTC.
fn at(t: DateTime<Utc>) -> String {
    crate::humanize::utc(t)
}

/// What a pipeline or step waits for, with the facts its sentence names.
#[derive(Debug, Clone, PartialEq)]
enum Wait<'a> {
    Suspended {
        source: &'a Path,
    },
    Paused,
    Schedule {
        next: DateTime<Utc>,
        zone: Tz,
    },
    Unscheduled,
    BackfillLimit {
        run: &'a PipelineRunId,
        backfill: &'a str,
        running: usize,
    },
    ConcurrencyLimit {
        run: &'a PipelineRunId,
        blocker: Option<&'a PipelineRunId>,
        policy: &'static str,
    },
    RunFinishing {
        run: &'a PipelineRunId,
    },
    StepNotInRun {
        run: &'a PipelineRunId,
        step: StepName,
    },
    /// The run is past its deadline (`late_since` set): said first, then what it waits for.
    Late {
        run: &'a PipelineRun,
        now: DateTime<Utc>,
        then: Box<Wait<'a>>,
    },
    /// The remaining cases are about one step of `run`.
    Step {
        run: &'a PipelineRunId,
        step: StepName,
        wait: StepWait<'a>,
    },
}

/// What one step of an active run waits for.
#[derive(Debug, Clone, PartialEq)]
enum StepWait<'a> {
    Upstream {
        /// Each upstream step not succeeded, with its state.
        waiting_on: Vec<(StepName, &'static str)>,
    },
    /// The step's account has `in_flight` attempts in flight, at its cap.
    InFlightCap {
        in_flight: usize,
        cap: usize,
        account: AccountName,
    },
    RetryBackoff {
        until: DateTime<Utc>,
        /// The last attempt's number and how it ended.
        last: Option<(u32, &'static str)>,
        wait: std::time::Duration,
    },
    Starting,
    Cancelling {
        attempt: &'a Attempt,
        reason: CancelReason,
        requested_at: DateTime<Utc>,
    },
    RequestBudget {
        attempt: &'a Attempt,
        again: DateTime<Utc>,
    },
    Triggering {
        attempt: &'a Attempt,
    },
    DbtCloudQueue {
        attempt: &'a Attempt,
    },
    Running {
        attempt: &'a Attempt,
    },
    Over {
        state: &'static str,
        errored: bool,
    },
}

impl Wait<'_> {
    fn reason(&self) -> WhyReason {
        match self {
            Wait::Suspended { .. } => WhyReason::Suspended,
            Wait::Paused => WhyReason::Paused,
            Wait::Schedule { .. } => WhyReason::Schedule,
            Wait::Unscheduled => WhyReason::Unscheduled,
            Wait::BackfillLimit { .. } => WhyReason::BackfillLimit,
            Wait::ConcurrencyLimit { .. } => WhyReason::ConcurrencyLimit,
            Wait::RunFinishing { .. } | Wait::StepNotInRun { .. } => WhyReason::Finished,
            Wait::Late { then, .. } => then.reason(),
            Wait::Step { wait, .. } => match wait {
                StepWait::Upstream { .. } => WhyReason::Upstream,
                StepWait::InFlightCap { .. } => WhyReason::InFlightCap,
                StepWait::RetryBackoff { .. } => WhyReason::RetryBackoff,
                StepWait::Starting | StepWait::Triggering { .. } => WhyReason::Triggering,
                StepWait::Cancelling { .. } => WhyReason::Cancelling,
                StepWait::RequestBudget { .. } => WhyReason::RequestBudget,
                StepWait::DbtCloudQueue { .. } => WhyReason::DbtCloudQueue,
                StepWait::Running { .. } => WhyReason::Running,
                StepWait::Over { .. } => WhyReason::Finished,
            },
        }
    }

    /// When the wait ends, when known.
    fn until(&self) -> Option<DateTime<Utc>> {
        match self {
            Wait::Schedule { next, .. } => Some(*next),
            Wait::Late { then, .. } => then.until(),
            Wait::Step {
                wait: StepWait::RetryBackoff { until, .. },
                ..
            } => Some(*until),
            Wait::Step {
                wait: StepWait::RequestBudget { again, .. },
                ..
            } => Some(*again),
            _ => None,
        }
    }

    /// The sentence an operator reads.
    fn sentence(&self, pipeline: &PipelineName) -> String {
        match self {
            Wait::Suspended { source } => format!(
                "`{pipeline}` is suspended in its file ({}); remove `suspended: true` and reload to schedule it again",
                source.display()
            ),
            Wait::Paused => format!(
                "`{pipeline}` is paused by an operator; `baton resume {pipeline}` schedules it again"
            ),
            Wait::Schedule { next, zone } => format!(
                "`{pipeline}` has no active run and waits for its schedule: next run at {}",
                crate::humanize::when(*next, *zone),
            ),
            Wait::Unscheduled => format!(
                "`{pipeline}` has no schedule and no active run; it runs when triggered (`baton trigger {pipeline}`)"
            ),
            Wait::BackfillLimit {
                run,
                backfill,
                running,
            } => format!(
                "run {run} waits for room under backfill {backfill}'s max_active ({running} of its runs are running)"
            ),
            Wait::ConcurrencyLimit {
                run,
                blocker: Some(blocker),
                policy,
            } => format!(
                "run {run} is queued behind the previous run {blocker} which is still active (concurrency: {policy})"
            ),
            Wait::ConcurrencyLimit { run, blocker: None, .. } => {
                format!("run {run} is queued and starts at the next plan")
            }
            Wait::RunFinishing { run } => format!("run {run} is finishing: every step is over"),
            Wait::StepNotInRun { run, step } => format!("step {step} is not part of run {run}"),
            Wait::Step { run, step, wait } => step_sentence(run, step, wait),
            Wait::Late { run, now, then } => match super::deadline::late_sentence(run, *now) {
                Some(late) => format!("{late}. {}", then.sentence(pipeline)),
                None => then.sentence(pipeline),
            },
        }
    }
}

fn step_sentence(run: &PipelineRunId, name: &StepName, wait: &StepWait<'_>) -> String {
    let dbt_run = |a: &Attempt| a.run_id.map_or("?".into(), |r| r.to_string());
    match wait {
        StepWait::Upstream { waiting_on } => {
            let waiting_on: Vec<String> = waiting_on
                .iter()
                .map(|(step, state)| format!("{step} ({state})"))
                .collect();
            format!(
                "step {name} of run {run} waits for its upstream {}",
                waiting_on.join(", ")
            )
        }
        StepWait::InFlightCap {
            in_flight,
            cap,
            account,
        } => format!(
            "step {name} of run {run} is ready but the cap on attempts in flight of account `{account}` is reached ({in_flight} of {cap})"
        ),
        StepWait::RetryBackoff { until, last, wait } => {
            let last = last.map_or(String::new(), |(number, outcome)| {
                format!(" (attempt {number} ended {outcome})")
            });
            format!(
                "step {name} of run {run} waits for its retry backoff{last}: the next attempt starts at {} (in {})",
                at(*until),
                humantime::format_duration(*wait)
            )
        }
        StepWait::Starting => format!("step {name} of run {run} is starting"),
        StepWait::Cancelling {
            attempt,
            reason,
            requested_at,
        } => format!(
            "step {name} of run {run}: baton asked dbt Cloud to cancel run {} ({}) at {} and waits for it to confirm (status 30)",
            dbt_run(attempt),
            crate::humanize::cancel_reason(*reason),
            at(*requested_at)
        ),
        StepWait::RequestBudget { attempt, again } => format!(
            "step {name} of run {run}: dbt Cloud did not take the trigger ({}); baton sends it again at {} (the account's request budget or a connection problem)",
            attempt.message.as_deref().unwrap_or("refused"),
            at(*again)
        ),
        StepWait::Triggering { attempt } => format!(
            "step {name} of run {run} is being triggered (job {}, attempt {}): waiting for dbt Cloud to answer{}",
            attempt.job_id,
            attempt.number,
            if attempt.reconcile_at.is_some() {
                ", then checking whether the run was created"
            } else {
                ""
            }
        ),
        StepWait::DbtCloudQueue { attempt } => {
            let run_id = dbt_run(attempt);
            let since = attempt
                .queued_since
                .map_or(String::new(), |t| format!(" since {}", at(t)));
            if attempt.blocked_by.is_empty() {
                format!(
                    "step {name} of run {run}: dbt Cloud run {run_id} is in dbt Cloud's queue{since} (waiting for a run slot)"
                )
            } else {
                let by: Vec<String> = attempt.blocked_by.iter().map(|r| r.to_string()).collect();
                format!(
                    "step {name} of run {run}: dbt Cloud run {run_id} is queued{since} behind run {} of the same job (blocked_by; dbt Cloud runs one run of a job at a time)",
                    by.join(", ")
                )
            }
        }
        StepWait::Running { attempt } => format!(
            "step {name} of run {run} is running in dbt Cloud as run {}{}",
            dbt_run(attempt),
            attempt
                .running_since
                .map_or(String::new(), |t| format!(" since {}", at(t)))
        ),
        StepWait::Over { state, errored } => format!(
            "step {name} of run {run} is over: {state}{}",
            if *errored {
                " (its last dbt Cloud run ended in error)"
            } else {
                ""
            }
        ),
    }
}

impl Engine {
    /// Why the pipeline (or its step) is not running, or what it is doing.
    pub fn why(
        &self,
        pipeline: &PipelineName,
        step: Option<&StepName>,
        now: DateTime<Utc>,
    ) -> Result<Why, WhyError> {
        let (wait, attempt) = self.classify(pipeline, step, now)?;
        let what = match &wait {
            Wait::Late { then, .. } => then.as_ref(),
            other => other,
        };
        let (run, step_name) = match what {
            Wait::BackfillLimit { run, .. }
            | Wait::ConcurrencyLimit { run, .. }
            | Wait::RunFinishing { run } => (Some(*run), step.cloned()),
            Wait::StepNotInRun { run, .. } => (Some(*run), step.cloned()),
            Wait::Step { run, step, .. } => (Some(*run), Some(step.clone())),
            _ => (None, step.cloned()),
        };
        Ok(Why {
            reason: wait.reason(),
            sentence: wait.sentence(pipeline),
            pipeline: pipeline.clone(),
            run: run.map(|r| r.0.clone()),
            step: step_name,
            until: wait.until(),
            dbt_run: attempt.and_then(|a| a.run_id).map(|r| r.0),
            href: attempt.and_then(|a| a.href.clone()),
        })
    }

    /// What the pipeline (or its step) waits for, and the step's current attempt when a step is
    /// concerned.
    fn classify<'a>(
        &'a self,
        pipeline: &PipelineName,
        step: Option<&StepName>,
        now: DateTime<Utc>,
    ) -> Result<(Wait<'a>, Option<&'a Attempt>), WhyError> {
        let loaded = self
            .pipelines
            .get(pipeline)
            .ok_or_else(|| WhyError::UnknownPipeline(pipeline.clone()))?;
        if let Some(step) = step {
            if loaded.def.step(step).is_none() {
                return Err(WhyError::UnknownStep {
                    pipeline: pipeline.clone(),
                    step: step.clone(),
                });
            }
        }
        // The newest regular run is the one an operator asks about (a queued one names the run
        // that holds it back); backfill runs only when no regular run is active.
        let mut active: Vec<&PipelineRun> = self
            .index
            .active
            .iter()
            .filter_map(|id| self.state.runs.get(id))
            .filter(|r| r.pipeline() == pipeline)
            .collect();
        active.sort_by_key(|r| (r.is_backfill(), std::cmp::Reverse(r.logical_date)));
        if let Some(run) = active.first() {
            let (wait, attempt) = self.classify_run(run, step, now);
            // A late run says so first, with every step it still waits for.
            if run.late_since.is_some() {
                let then = Box::new(wait);
                return Ok((Wait::Late { run, now, then }, attempt));
            }
            return Ok((wait, attempt));
        }
        let wait = if loaded.def.suspended {
            Wait::Suspended {
                source: &loaded.def.source,
            }
        } else if self.state.cursors.get(pipeline).is_some_and(|c| c.paused) {
            Wait::Paused
        } else {
            match self.next_tick(pipeline, now) {
                Some(next) => Wait::Schedule {
                    next,
                    zone: loaded
                        .schedule
                        .as_ref()
                        .map_or(chrono_tz::UTC, |s| s.timezone()),
                },
                None => Wait::Unscheduled,
            }
        };
        Ok((wait, None))
    }

    fn classify_run<'a>(
        &'a self,
        run: &'a PipelineRun,
        step: Option<&StepName>,
        now: DateTime<Utc>,
    ) -> (Wait<'a>, Option<&'a Attempt>) {
        if run.state == PipelineRunState::Queued {
            if let RunOrigin::Backfill { backfill } = &run.origin {
                let wait = Wait::BackfillLimit {
                    run: &run.id,
                    backfill,
                    running: self.backfill_running_runs(backfill),
                };
                return (wait, None);
            }
            let blocker = self
                .index
                .active
                .iter()
                .filter_map(|id| self.state.runs.get(id))
                .find(|o| {
                    o.pipeline() == run.pipeline()
                        && !o.is_backfill()
                        && o.state == PipelineRunState::Running
                });
            let policy = match run.definition.concurrency {
                ConcurrencyPolicy::Skip => "skip",
                ConcurrencyPolicy::Queue => "queue",
                ConcurrencyPolicy::CancelRunning => "cancel_running",
            };
            let wait = Wait::ConcurrencyLimit {
                run: &run.id,
                blocker: blocker.map(|b| &b.id),
                policy,
            };
            return (wait, None);
        }
        // The step asked for, else the first step (in DAG order) that is not over.
        let def = &run.definition;
        let chosen = match step {
            Some(s) => Some(s.clone()),
            None => def
                .steps
                .iter()
                .find(|s| {
                    run.steps
                        .get(&s.name)
                        .is_some_and(|r| !r.state.is_terminal() && r.state != StepState::Pending)
                })
                .or_else(|| {
                    def.steps.iter().find(|s| {
                        run.steps
                            .get(&s.name)
                            .is_some_and(|r| !r.state.is_terminal())
                    })
                })
                .map(|s| s.name.clone()),
        };
        let Some(name) = chosen else {
            return (Wait::RunFinishing { run: &run.id }, None);
        };
        let Some(step_run) = run.steps.get(&name) else {
            return (
                Wait::StepNotInRun {
                    run: &run.id,
                    step: name,
                },
                None,
            );
        };
        let attempt = step_run.current();
        let wait = match step_run.state {
            StepState::Pending => {
                let waiting_on: Vec<(StepName, &'static str)> = def
                    .step(&name)
                    .map(|s| s.depends_on.clone())
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|u| {
                        let state = run
                            .steps
                            .get(&u)
                            .filter(|s| s.state != StepState::Succeeded)?
                            .state
                            .name();
                        Some((u, state))
                    })
                    .collect();
                if waiting_on.is_empty() {
                    let account = def
                        .step(&name)
                        .map(|s| s.account.clone())
                        .unwrap_or_default();
                    StepWait::InFlightCap {
                        in_flight: self
                            .in_flight_by_account()
                            .get(&account)
                            .copied()
                            .unwrap_or(0),
                        cap: self.config.max_in_flight,
                        account,
                    }
                } else {
                    StepWait::Upstream { waiting_on }
                }
            }
            StepState::WaitingRetry { until } => StepWait::RetryBackoff {
                until,
                last: attempt.map(|a| (a.number, a.outcome.map_or("?", |o| o.name()))),
                wait: (until - now).to_std().unwrap_or_default(),
            },
            StepState::Running => match attempt {
                None => StepWait::Starting,
                Some(a) => attempt_wait(a),
            },
            done => StepWait::Over {
                state: done.name(),
                errored: attempt.and_then(|a| a.status) == Some(RunStatus::Error),
            },
        };
        let wait = Wait::Step {
            run: &run.id,
            step: name,
            wait,
        };
        (wait, attempt)
    }
}

/// What a running step's current attempt waits for.
fn attempt_wait(a: &Attempt) -> StepWait<'_> {
    if let Some(cancel) = &a.cancel {
        return StepWait::Cancelling {
            attempt: a,
            reason: cancel.reason,
            requested_at: cancel.requested_at,
        };
    }
    match (a.phase, a.resend_at) {
        (AttemptPhase::Triggering, Some(again)) => StepWait::RequestBudget { attempt: a, again },
        (AttemptPhase::Triggering, None) => StepWait::Triggering { attempt: a },
        _ if a.status.is_some_and(|s| s.is_queued()) => StepWait::DbtCloudQueue { attempt: a },
        _ => StepWait::Running { attempt: a },
    }
}
