//! "Why is this not running?": one sentence, and a machine-readable reason, for a pipeline or one
//! of its steps, read from the engine's state (pure, like the rest of the engine).

use super::state::{AttemptPhase, PipelineRun, PipelineRunState, RunOrigin, StepState};
use super::Engine;
use crate::dbt_cloud::wire::RunStatus;
use crate::model::pipeline::{ConcurrencyPolicy, PipelineName, StepName};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

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

fn at(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

impl Engine {
    /// Why the pipeline (or its step) is not running, or what it is doing.
    pub fn why(
        &self,
        pipeline: &PipelineName,
        step: Option<&StepName>,
        now: DateTime<Utc>,
    ) -> Result<Why, WhyError> {
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
        let base = Why {
            reason: WhyReason::Finished,
            sentence: String::new(),
            pipeline: pipeline.clone(),
            run: None,
            step: step.cloned(),
            until: None,
            dbt_run: None,
            href: None,
        };
        // The newest regular run is the one an operator asks about (a queued one names the run
        // that holds it back); backfill runs only when no regular run is active.
        let mut active: Vec<&PipelineRun> = self
            .index.active
            .iter()
            .filter_map(|id| self.state.runs.get(id))
            .filter(|r| r.pipeline() == pipeline)
            .collect();
        active.sort_by_key(|r| (r.is_backfill(), std::cmp::Reverse(r.logical_date)));
        if let Some(run) = active.first() {
            return Ok(self.why_run(run, step, now, base));
        }
        if loaded.def.suspended {
            return Ok(Why {
                reason: WhyReason::Suspended,
                sentence: format!(
                    "`{pipeline}` is suspended in its file ({}); remove `suspended: true` and reload to schedule it again",
                    loaded.def.source.display()
                ),
                ..base
            });
        }
        if self.state.cursors.get(pipeline).is_some_and(|c| c.paused) {
            return Ok(Why {
                reason: WhyReason::Paused,
                sentence: format!(
                    "`{pipeline}` is paused by an operator; `baton resume {pipeline}` schedules it again"
                ),
                ..base
            });
        }
        match self.next_tick(pipeline, now) {
            Some(next) => Ok(Why {
                reason: WhyReason::Schedule,
                sentence: format!(
                    "`{pipeline}` has no active run and waits for its schedule: next run at {} ({} in {})",
                    at(next),
                    next.with_timezone(&self.pipelines[pipeline].schedule.as_ref().map_or(chrono_tz::UTC, |s| s.timezone())).format("%Y-%m-%d %H:%M"),
                    self.pipelines[pipeline].schedule.as_ref().map_or(chrono_tz::UTC, |s| s.timezone()),
                ),
                until: Some(next),
                ..base
            }),
            None => Ok(Why {
                reason: WhyReason::Unscheduled,
                sentence: format!(
                    "`{pipeline}` has no schedule and no active run; it runs when triggered (`baton trigger {pipeline}`)"
                ),
                ..base
            }),
        }
    }

    fn why_run(
        &self,
        run: &PipelineRun,
        step: Option<&StepName>,
        now: DateTime<Utc>,
        base: Why,
    ) -> Why {
        let base = Why {
            run: Some(run.id.0.clone()),
            ..base
        };
        if run.state == PipelineRunState::Queued {
            if let RunOrigin::Backfill { backfill } = &run.origin {
                return Why {
                    reason: WhyReason::BackfillLimit,
                    sentence: format!(
                        "run {} waits for room under backfill {backfill}'s max_active ({} of its runs are running)",
                        run.id,
                        self.backfill_running_runs(backfill)
                    ),
                    ..base
                };
            }
            let blocker = self
                .index.active
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
            return Why {
                reason: WhyReason::ConcurrencyLimit,
                sentence: match blocker {
                    Some(b) => format!(
                        "run {} is queued behind the previous run {} which is still active (concurrency: {policy})",
                        run.id, b.id
                    ),
                    None => format!("run {} is queued and starts at the next plan", run.id),
                },
                ..base
            };
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
            return Why {
                reason: WhyReason::Finished,
                sentence: format!("run {} is finishing: every step is over", run.id),
                ..base
            };
        };
        let Some(step_run) = run.steps.get(&name) else {
            return Why {
                reason: WhyReason::Finished,
                sentence: format!("step {name} is not part of run {}", run.id),
                ..base
            };
        };
        let base = Why {
            step: Some(name.clone()),
            ..base
        };
        let attempt = step_run.current();
        let base = Why {
            dbt_run: attempt.and_then(|a| a.run_id).map(|r| r.0),
            href: attempt.and_then(|a| a.href.clone()),
            ..base
        };
        match step_run.state {
            StepState::Pending => {
                let waiting_on: Vec<String> = def
                    .step(&name)
                    .map(|s| s.depends_on.clone())
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|u| {
                        run.steps
                            .get(&u)
                            .filter(|s| s.state != StepState::Succeeded)
                            .map(|s| format!("{u} ({})", s.state.name()))
                    })
                    .collect();
                if !waiting_on.is_empty() {
                    return Why {
                        reason: WhyReason::Upstream,
                        sentence: format!(
                            "step {name} of run {} waits for its upstream {}",
                            run.id,
                            waiting_on.join(", ")
                        ),
                        ..base
                    };
                }
                let in_flight = self.in_flight_attempts();
                Why {
                    reason: WhyReason::InFlightCap,
                    sentence: format!(
                        "step {name} of run {} is ready but the account's cap on attempts in flight is reached ({in_flight} of {})",
                        run.id, self.config.max_in_flight
                    ),
                    ..base
                }
            }
            StepState::WaitingRetry { until } => {
                let last = attempt.map_or(String::new(), |a| {
                    format!(
                        " (attempt {} ended {})",
                        a.number,
                        a.outcome.map_or("?", |o| o.name())
                    )
                });
                let wait = humantime::format_duration((until - now).to_std().unwrap_or_default());
                Why {
                    reason: WhyReason::RetryBackoff,
                    sentence: format!(
                        "step {name} of run {} waits for its retry backoff{last}: the next attempt starts at {} (in {wait})",
                        run.id,
                        at(until)
                    ),
                    until: Some(until),
                    ..base
                }
            }
            StepState::Running => {
                let Some(a) = attempt else {
                    return Why {
                        reason: WhyReason::Triggering,
                        sentence: format!("step {name} of run {} is starting", run.id),
                        ..base
                    };
                };
                if let Some(cancel) = &a.cancel {
                    return Why {
                        reason: WhyReason::Cancelling,
                        sentence: format!(
                            "step {name} of run {}: baton asked dbt Cloud to cancel run {} ({:?}) at {} and waits for it to confirm (status 30)",
                            run.id,
                            a.run_id.map_or("?".into(), |r| r.to_string()),
                            cancel.reason,
                            at(cancel.requested_at)
                        ),
                        ..base
                    };
                }
                if let (AttemptPhase::Triggering, Some(again)) = (a.phase, a.resend_at) {
                    return Why {
                        reason: WhyReason::RequestBudget,
                        sentence: format!(
                            "step {name} of run {}: dbt Cloud did not take the trigger ({}); baton sends it again at {} (the account's request budget or a connection problem)",
                            run.id,
                            a.message.as_deref().unwrap_or("refused"),
                            at(again)
                        ),
                        until: Some(again),
                        ..base
                    };
                }
                if a.phase == AttemptPhase::Triggering {
                    return Why {
                        reason: WhyReason::Triggering,
                        sentence: format!(
                            "step {name} of run {} is being triggered (job {}, attempt {}): waiting for dbt Cloud to answer{}",
                            run.id,
                            a.job_id,
                            a.number,
                            if a.reconcile_at.is_some() {
                                ", then checking whether the run was created"
                            } else {
                                ""
                            }
                        ),
                        ..base
                    };
                }
                let run_id = a.run_id.map_or("?".into(), |r| r.to_string());
                match a.status {
                    Some(s) if s.is_queued() => {
                        let since = a
                            .queued_since
                            .map_or(String::new(), |t| format!(" since {}", at(t)));
                        let sentence = if a.blocked_by.is_empty() {
                            format!(
                                "step {name} of run {}: dbt Cloud run {run_id} is in dbt Cloud's queue{since} (waiting for a run slot)",
                                run.id
                            )
                        } else {
                            let by: Vec<String> =
                                a.blocked_by.iter().map(|r| r.to_string()).collect();
                            format!(
                                "step {name} of run {}: dbt Cloud run {run_id} is queued{since} behind run {} of the same job (blocked_by; dbt Cloud runs one run of a job at a time)",
                                run.id,
                                by.join(", ")
                            )
                        };
                        Why {
                            reason: WhyReason::DbtCloudQueue,
                            sentence,
                            ..base
                        }
                    }
                    _ => Why {
                        reason: WhyReason::Running,
                        sentence: format!(
                            "step {name} of run {} is running in dbt Cloud as run {run_id}{}",
                            run.id,
                            a.running_since
                                .map_or(String::new(), |t| format!(" since {}", at(t)))
                        ),
                        ..base
                    },
                }
            }
            done => Why {
                reason: WhyReason::Finished,
                sentence: format!(
                    "step {name} of run {} is over: {}{}",
                    run.id,
                    done.name(),
                    attempt
                        .and_then(|a| a.status)
                        .filter(|s| *s == RunStatus::Error)
                        .map_or(String::new(), |_| {
                            " (its last dbt Cloud run ended in error)".into()
                        })
                ),
                ..base
            },
        }
    }
}
