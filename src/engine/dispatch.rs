//! DAG dispatch: which steps of a running pipeline run are ready, starting their attempts (rendered
//! overrides, cause with the attempt key), retry policy by failure class, and ending pipeline runs.

use super::event::{Action, Plan, TransitionKind};
use super::state::{
    Attempt, AttemptKey, AttemptKind, AttemptOutcome, AttemptPhase, AttemptRef, CancelReason,
    CancelRequest, PipelineRunId, PipelineRunState, StepState,
};
use super::{earliest, to_chrono, Engine};
use crate::ids::AccountName;
use crate::model::pipeline::StepName;
use crate::model::template::{render_cause, render_overrides, TemplateContext};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;

impl Engine {
    /// Starts ready steps of running pipeline runs; returns whether any pipeline run ended.
    /// `full`: every active run; otherwise only the runs changed since the last pass.
    pub(super) fn plan_dispatch(
        &mut self,
        now: DateTime<Utc>,
        plan: &mut Plan,
        full: bool,
    ) -> bool {
        let mut ended = false;
        let candidates = if full {
            self.index.active.ids()
        } else {
            &self.passes.changed
        };
        if candidates.is_empty() {
            return false;
        }
        // Counted (over every active run) only once a step is ready to start.
        let mut in_flight: Option<BTreeMap<AccountName, usize>> = None;
        let mut running: Vec<(DateTime<Utc>, PipelineRunId)> = candidates
            .iter()
            .filter_map(|id| self.state.runs.get(id))
            .filter(|r| r.state == PipelineRunState::Running)
            .map(|r| (r.logical_date, r.id.clone()))
            .collect();
        running.sort();
        for (_, id) in running {
            let Some(run) = self.state.runs.get(&id) else {
                continue;
            };
            let def = run.definition.clone();
            let cancelling = run.cancel_reason.is_some();
            for step in &def.steps {
                let Some(state) = self
                    .state
                    .runs
                    .get(&id)
                    .and_then(|r| r.steps.get(&step.name))
                else {
                    continue;
                };
                match state.state {
                    StepState::Pending | StepState::WaitingRetry { .. } if cancelling => {
                        self.set_step_state(&id, &step.name, StepState::Cancelled, now, "");
                    }
                    StepState::Pending => {
                        let upstream: Vec<StepState> = step
                            .depends_on
                            .iter()
                            .filter_map(|u| self.state.runs.get(&id).and_then(|r| r.steps.get(u)))
                            .map(|s| s.state)
                            .collect();
                        if upstream.iter().any(|s| {
                            matches!(
                                s,
                                StepState::Failed
                                    | StepState::UpstreamFailed
                                    | StepState::Cancelled
                            )
                        }) {
                            self.set_step_state(
                                &id,
                                &step.name,
                                StepState::UpstreamFailed,
                                now,
                                "an upstream step failed",
                            );
                        } else if upstream.iter().all(|s| *s == StepState::Succeeded) {
                            let used = in_flight
                                .get_or_insert_with(|| self.in_flight_by_account())
                                .entry(step.account.clone())
                                .or_default();
                            if *used < self.config.max_in_flight {
                                *used += 1;
                                self.start_attempt(
                                    &id,
                                    &step.name,
                                    AttemptKind::Trigger,
                                    now,
                                    plan,
                                );
                            } else {
                                self.passes.blocked_by_cap = true;
                                self.passes.blocked_accounts.insert(step.account.clone());
                            }
                        }
                    }
                    StepState::WaitingRetry { until } => {
                        if until > now {
                            plan.wake_at = earliest(plan.wake_at, until);
                        } else if in_flight
                            .get_or_insert_with(|| self.in_flight_by_account())
                            .get(&step.account)
                            .copied()
                            .unwrap_or(0)
                            >= self.config.max_in_flight
                        {
                            self.passes.blocked_by_cap = true;
                            self.passes.blocked_accounts.insert(step.account.clone());
                        } else {
                            let previous = state.current();
                            let kind = match previous {
                                Some(p)
                                    if step.limits.retry.from_failure
                                        && p.outcome == Some(AttemptOutcome::Error) =>
                                {
                                    match p.run_id {
                                        Some(failed_run) => AttemptKind::RerunFrom { failed_run },
                                        None => AttemptKind::Trigger,
                                    }
                                }
                                _ => AttemptKind::Trigger,
                            };
                            self.start_attempt(&id, &step.name, kind, now, plan);
                            *in_flight
                                .get_or_insert_with(|| self.in_flight_by_account())
                                .entry(step.account.clone())
                                .or_default() += 1;
                        }
                    }
                    _ => {}
                }
            }
            ended |= self.finish_run_if_done(&id, now);
        }
        ended
    }

    fn start_attempt(
        &mut self,
        id: &PipelineRunId,
        step_name: &StepName,
        kind: AttemptKind,
        now: DateTime<Utc>,
        plan: &mut Plan,
    ) {
        let Some(run) = self.state.runs.get(id) else {
            return;
        };
        let def = run.definition.clone();
        let Some(step) = def.step(step_name) else {
            return;
        };
        let number = run
            .steps
            .get(step_name)
            .map_or(0, |s| s.attempts.len() as u32)
            + 1;
        let key = AttemptKey::derive(id, step_name, number);
        let ctx = TemplateContext {
            logical_date: run.logical_date,
            timezone: def.schedule.as_ref().map_or(chrono_tz::UTC, |s| s.timezone),
            data_interval_start: run.data_interval_start,
            data_interval_end: run.logical_date,
            pipeline: def.name.0.clone(),
            step: step_name.0.clone(),
            attempt: number,
            is_backfill: run.is_backfill(),
        };
        let rendered = render_overrides(&step.overrides, &ctx);
        let cause = render_cause(&def, &ctx, &key.0);
        let (request, failure) = match rendered {
            Ok(mut request) => {
                request.cause = cause;
                (request, None)
            }
            Err(e) => (
                crate::dbt_cloud::wire::TriggerRequest {
                    cause,
                    ..Default::default()
                },
                Some(format!("overrides failed to render: {e}")),
            ),
        };
        let rerun_of = match kind {
            AttemptKind::RerunFrom { failed_run } => Some(failed_run),
            AttemptKind::Trigger => None,
        };
        let attempt = Attempt {
            number,
            key,
            job_id: step.job_id,
            kind,
            phase: AttemptPhase::Triggering,
            request: request.clone(),
            run_id: None,
            href: None,
            status: None,
            history: Vec::new(),
            blocked_by: Vec::new(),
            created_at: now,
            sends: if failure.is_some() { 0 } else { 1 },
            resend_at: None,
            reconcile_at: None,
            accepted_at: None,
            queued_since: None,
            running_since: None,
            finished_at: None,
            cancel: None,
            outcome: None,
            message: None,
            details: None,
            run_duration_ms: None,
        };
        let Some(step_run) = self
            .state
            .runs
            .get_mut(id)
            .and_then(|r| r.steps.get_mut(step_name))
        else {
            return;
        };
        // Most steps make one attempt: room for exactly one more, not the four a first push
        // reserves (attempts are most of the memory of the runs held).
        step_run.attempts.reserve_exact(1);
        step_run.attempts.push(attempt);
        step_run.state = StepState::Running;
        self.mark_changed(id.clone());
        let at = AttemptRef {
            run: id.clone(),
            step: step_name.clone(),
            number,
        };
        if let Some(message) = failure {
            self.finish_attempt(&at, AttemptOutcome::Rejected, Some(message), now);
            return;
        }
        self.note_attempt(
            now,
            &at,
            TransitionKind::StepTriggering,
            match rerun_of {
                Some(r) => format!("rerun from failure of run {r} (job {})", step.job_id),
                None => format!("triggering job {}", step.job_id),
            },
        );
        self.in_flight.triggers.insert(at.clone());
        plan.actions.push(Action::Trigger {
            attempt: at,
            job: step.job_id,
            request: Box::new(request),
            rerun_of,
        });
    }

    /// Ends an attempt and moves its step on by the retry policy of the outcome's class.
    pub(super) fn finish_attempt(
        &mut self,
        at: &AttemptRef,
        outcome: AttemptOutcome,
        message: Option<String>,
        now: DateTime<Utc>,
    ) {
        let Some(run) = self.state.runs.get_mut(&at.run) else {
            return;
        };
        let cancelling = run.cancel_reason.is_some();
        let def = run.definition.clone();
        let Some(step_run) = run.steps.get_mut(&at.step) else {
            return;
        };
        let Some(attempt) = step_run.attempts.iter_mut().find(|a| a.number == at.number) else {
            return;
        };
        if attempt.phase == AttemptPhase::Finished {
            return;
        }
        attempt.phase = AttemptPhase::Finished;
        attempt.outcome = Some(outcome);
        attempt.finished_at = Some(now);
        attempt.reconcile_at = None;
        attempt.resend_at = None;
        if message.is_some() {
            attempt.message = message.clone();
        }
        // A person reads the transition: baton's own timeout says so, not only dbt Cloud's words.
        let reason = crate::humanize::step_attempt_reason(attempt, def.step(&at.step));
        let explain = outcome == AttemptOutcome::Error && attempt.run_id.is_some();
        if let Some(id) = attempt.run_id {
            self.index.by_dbt_run.remove(&id);
            self.due.polls.remove(id);
        }
        self.mark_changed(at.run.clone());
        if explain {
            self.want_details(at, now);
        }
        let detail = reason.or(message).unwrap_or_default();
        let Some(step) = def.step(&at.step) else {
            return;
        };
        let policy = &step.limits.retry;
        let retryable = match outcome {
            AttemptOutcome::Success => {
                self.set_step_state(&at.run, &at.step, StepState::Succeeded, now, &detail);
                return;
            }
            AttemptOutcome::Error => true,
            AttemptOutcome::TimedOut | AttemptOutcome::QueueTimedOut => policy.on_timeout,
            AttemptOutcome::CancelledOutside => policy.on_cancel,
            AttemptOutcome::CancelledByBaton | AttemptOutcome::Rejected => false,
        };
        if cancelling || outcome == AttemptOutcome::CancelledByBaton {
            self.set_step_state(&at.run, &at.step, StepState::Cancelled, now, &detail);
        } else if retryable && at.number < policy.attempts {
            let until = now + to_chrono(policy.delay_before(at.number + 1));
            self.note_attempt(
                now,
                at,
                TransitionKind::StepRetryScheduled,
                format!(
                    "attempt {} ended {}; attempt {} of {} at {}",
                    at.number,
                    outcome.name(),
                    at.number + 1,
                    policy.attempts,
                    crate::humanize::when(until, crate::humanize::zone_of(&def))
                ),
            );
            self.set_step_state(
                &at.run,
                &at.step,
                StepState::WaitingRetry { until },
                now,
                "",
            );
        } else {
            self.note_attempt(
                now,
                at,
                TransitionKind::StepFailed,
                match outcome {
                    // dbt Cloud's own words follow the class.
                    AttemptOutcome::Error | AttemptOutcome::Rejected => {
                        format!("attempt {} ended {}: {detail}", at.number, outcome.name())
                    }
                    // The reason already says how it ended (`timed out after 2s; ...`).
                    _ => format!("attempt {}: {detail}", at.number),
                },
            );
            self.set_step_state(&at.run, &at.step, StepState::Failed, now, "");
        }
    }

    pub(super) fn set_step_state(
        &mut self,
        id: &PipelineRunId,
        step: &StepName,
        state: StepState,
        now: DateTime<Utc>,
        detail: &str,
    ) {
        let Some(step_run) = self
            .state
            .runs
            .get_mut(id)
            .and_then(|r| r.steps.get_mut(step))
        else {
            return;
        };
        if step_run.state == state {
            return;
        }
        step_run.state = state;
        let number = step_run.attempts.len() as u32;
        self.mark_changed(id.clone());
        let kind = match state {
            StepState::Succeeded => TransitionKind::StepSucceeded,
            StepState::UpstreamFailed => TransitionKind::StepUpstreamFailed,
            StepState::Cancelled => TransitionKind::StepCancelled,
            _ => return,
        };
        let at = AttemptRef {
            run: id.clone(),
            step: step.clone(),
            number,
        };
        self.note_attempt(now, &at, kind, detail.to_string());
    }

    fn finish_run_if_done(&mut self, id: &PipelineRunId, now: DateTime<Utc>) -> bool {
        let Some(run) = self.state.runs.get_mut(id) else {
            return false;
        };
        if run.state.is_terminal() || !run.steps.values().all(|s| s.state.is_terminal()) {
            return false;
        }
        let all_ok = run.steps.values().all(|s| s.state == StepState::Succeeded);
        run.state = if all_ok {
            PipelineRunState::Succeeded
        } else if matches!(
            run.cancel_reason,
            Some(CancelReason::Operator | CancelReason::Superseded | CancelReason::Shutdown)
        ) {
            PipelineRunState::Cancelled
        } else {
            PipelineRunState::Failed
        };
        run.finished_at = Some(now);
        let state = run.state;
        let failed: Vec<String> = run
            .steps
            .iter()
            .filter(|(_, s)| s.state != StepState::Succeeded)
            .map(|(n, s)| format!("{n} {}", s.state.name()))
            .collect();
        let pipeline = run.pipeline().clone();
        self.index.active.remove(id, &pipeline);
        self.mark_changed(id.clone());
        let kind = match state {
            PipelineRunState::Succeeded => TransitionKind::PipelineRunSucceeded,
            PipelineRunState::Cancelled => TransitionKind::PipelineRunCancelled,
            _ => TransitionKind::PipelineRunFailed,
        };
        let mut detail = failed.join(", ");
        if let Some(late) = self.finishing_against_deadline(id, now) {
            detail = if detail.is_empty() {
                late
            } else {
                format!("{detail}; {late}")
            };
        }
        self.note_id(now, id, kind, detail);
        true
    }

    /// Cancels a pipeline run: steps not started are cancelled, attempts in flight get a cancel
    /// request that `plan` sends and polling confirms.
    pub(super) fn cancel_pipeline_run(
        &mut self,
        id: &PipelineRunId,
        reason: CancelReason,
        now: DateTime<Utc>,
    ) {
        let Some(run) = self.state.runs.get_mut(id) else {
            return;
        };
        if run.state.is_terminal() {
            return;
        }
        run.cancel_reason = Some(reason);
        if run.state == PipelineRunState::Queued {
            run.state = PipelineRunState::Running;
            run.started_at = Some(now);
        }
        for step in run.steps.values_mut() {
            match step.state {
                StepState::Pending | StepState::WaitingRetry { .. } => {
                    step.state = StepState::Cancelled;
                }
                StepState::Running => {
                    if let Some(a) = step.attempts.last_mut() {
                        if a.is_in_flight() && a.cancel.is_none() {
                            a.cancel = Some(CancelRequest {
                                reason,
                                requested_at: now,
                                acknowledged: false,
                            });
                        }
                    }
                }
                _ => {}
            }
        }
        self.mark_changed(id.clone());
        self.note_id(
            now,
            id,
            TransitionKind::CancelRequested,
            format!("{reason:?}"),
        );
        self.finish_run_if_done(id, now);
    }
}
