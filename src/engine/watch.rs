//! Following attempts in dbt Cloud: trigger answers and their reconciliation, polling, status
//! changes, timeouts and confirmed cancellation.

use super::event::{Action, Plan, TransitionKind, TriggerResult, POLL_PAGE};
use super::state::{
    AttemptOutcome, AttemptPhase, AttemptRef, CancelReason, CancelRequest, PipelineRunId,
    StatusChange,
};
use super::{earliest, predict, to_chrono, Engine};
use crate::dbt_cloud::wire::{Run, RunStatus};
use crate::ids::{AccountName, RunId};
use chrono::{DateTime, Utc};
use std::collections::BTreeSet;

impl Engine {
    pub(super) fn on_triggered(
        &mut self,
        at: AttemptRef,
        result: TriggerResult,
        now: DateTime<Utc>,
    ) {
        self.in_flight.triggers.remove(&at);
        let poll_interval = to_chrono(self.config.poll_interval);
        let reconcile_delay = to_chrono(self.config.reconcile_delay);
        match result {
            TriggerResult::Accepted(run) => {
                self.adopt(&at, &run, now, TransitionKind::StepTriggered)
            }
            TriggerResult::Rejected { message } => {
                self.finish_attempt(&at, AttemptOutcome::Rejected, Some(message), now);
            }
            TriggerResult::NotSent {
                message,
                retry_after,
            } => {
                let wait = retry_after.map_or(poll_interval, to_chrono);
                if let Some(a) = self.attempt_mut(&at) {
                    a.resend_at = Some(now + wait);
                    a.message = Some(message);
                }
                self.mark_changed(at.run.clone());
            }
            TriggerResult::Ambiguous { message } => {
                if let Some(a) = self.attempt_mut(&at) {
                    a.reconcile_at = Some(now + reconcile_delay);
                    a.message = Some(message.clone());
                }
                self.mark_changed(at.run.clone());
                self.note_attempt(
                    now,
                    &at,
                    TransitionKind::TriggerAmbiguous,
                    format!("{message}; will look for the run by its key before sending again"),
                );
            }
        }
    }

    pub(super) fn on_reconciled(
        &mut self,
        at: AttemptRef,
        found: Option<Box<Run>>,
        now: DateTime<Utc>,
    ) {
        self.in_flight.reconciles.remove(&at);
        match found {
            Some(run) => self.adopt(&at, &run, now, TransitionKind::TriggerAdopted),
            None => {
                let cancelled = self
                    .attempt_mut(&at)
                    .map(|a| {
                        a.reconcile_at = None;
                        a.cancel.is_some()
                    })
                    .unwrap_or(true);
                if cancelled {
                    // Cancelled before any run existed: nothing to send, nothing to cancel.
                    self.finish_attempt(&at, AttemptOutcome::CancelledByBaton, None, now);
                    return;
                }
                if let Some(a) = self.attempt_mut(&at) {
                    a.resend_at = Some(now);
                }
                self.mark_changed(at.run.clone());
            }
        }
    }

    pub(super) fn on_reconcile_failed(
        &mut self,
        at: AttemptRef,
        message: String,
        now: DateTime<Utc>,
    ) {
        self.in_flight.reconciles.remove(&at);
        let retry = now + to_chrono(self.config.poll_interval);
        if let Some(a) = self.attempt_mut(&at) {
            a.reconcile_at = Some(retry);
        }
        self.mark_changed(at.run.clone());
        tracing::warn!(attempt = %at, error = %message, "reconciliation failed; trying again");
    }

    /// The attempt now has a dbt Cloud run.
    fn adopt(&mut self, at: &AttemptRef, run: &Run, now: DateTime<Utc>, what: TransitionKind) {
        let Some(a) = self.attempt_mut(at) else {
            return;
        };
        if a.phase != AttemptPhase::Triggering {
            return;
        }
        a.phase = AttemptPhase::Active;
        a.run_id = Some(run.id);
        a.href = run.href.clone();
        a.accepted_at = Some(now);
        a.reconcile_at = None;
        a.resend_at = None;
        a.message = None;
        self.index.by_dbt_run.insert(run.id, at.clone());
        self.mark_changed(at.run.clone());
        let next = self.next_look(run.id, now);
        self.due.polls.set(run.id, next);
        self.note_attempt(now, at, what, format!("dbt Cloud run {}", run.id));
        self.on_run_seen(run, now);
    }

    /// Applies a run's status as dbt Cloud reports it.
    pub(super) fn on_run_seen(&mut self, run: &Run, now: DateTime<Utc>) {
        let Some(at) = self.index.by_dbt_run.get(&run.id).cloned() else {
            return;
        };
        // A backfill run queued in dbt Cloud behind another run baton watches (its siblings: dbt
        // Cloud runs one run of a job at a time) waits by baton's own design: that wait does not
        // count against queue_timeout.
        let behind_own_backfill = self
            .state
            .runs
            .get(&at.run)
            .is_some_and(|r| r.is_backfill())
            && run.blocked_by.iter().any(|b| {
                self.index
                    .by_dbt_run
                    .get(b)
                    .is_some_and(|o| o.run != at.run)
            });
        let Some(a) = self.attempt_mut(&at) else {
            return;
        };
        if a.phase != AttemptPhase::Active {
            return;
        }
        let status = run.status;
        let changed = a.status != Some(status);
        a.status = Some(status);
        a.blocked_by = run.blocked_by.clone();
        if a.href.is_none() {
            a.href = run.href.clone();
        }
        if changed {
            a.history.push(StatusChange {
                status: status.code(),
                at: now,
            });
        }
        if status.is_queued() {
            if behind_own_backfill {
                a.queued_since = Some(now);
            } else {
                a.queued_since.get_or_insert(now);
            }
        }
        if status == RunStatus::Running {
            a.running_since.get_or_insert(now);
        }
        let cancel = a.cancel.clone();
        let message = run.status_message.clone();
        if changed {
            self.mark_changed(at.run.clone());
            let kind = if matches!(status, RunStatus::Unknown(_)) {
                tracing::warn!(run = %run.id, code = status.code(), "dbt Cloud reported an unknown run status; treating it as not finished");
                TransitionKind::UnknownStatus
            } else {
                TransitionKind::StepStatus
            };
            self.note_attempt(now, &at, kind, status.to_string());
        }
        if !status.is_terminal() {
            return;
        }
        if status == RunStatus::Success {
            self.learn_duration(&at, run, now);
        }
        let outcome = match status {
            RunStatus::Success => AttemptOutcome::Success,
            RunStatus::Error => AttemptOutcome::Error,
            _ => match cancel.map(|c| c.reason) {
                Some(CancelReason::Timeout) => AttemptOutcome::TimedOut,
                Some(CancelReason::QueueTimeout) => AttemptOutcome::QueueTimedOut,
                Some(_) => AttemptOutcome::CancelledByBaton,
                None if message
                    .as_deref()
                    .is_some_and(|m| m.to_ascii_lowercase().contains("timed out")) =>
                {
                    AttemptOutcome::TimedOut
                }
                None => AttemptOutcome::CancelledOutside,
            },
        };
        self.finish_attempt(&at, outcome, message, now);
    }

    /// Re-sends, reconciles, enforces timeouts and sends cancels for attempts in flight.
    /// `full`: every active run's attempts; otherwise only those of `changed` runs.
    pub(super) fn plan_attempts(
        &mut self,
        now: DateTime<Utc>,
        plan: &mut Plan,
        full: bool,
        changed: &BTreeSet<PipelineRunId>,
    ) {
        let mut refs = Vec::new();
        let candidates = if full {
            self.index.active.ids()
        } else {
            changed
        };
        for id in candidates {
            let Some(run) = self.state.runs.get(id) else {
                continue;
            };
            for (name, step) in &run.steps {
                if let Some(a) = step.current().filter(|a| a.is_in_flight()) {
                    refs.push(AttemptRef {
                        run: id.clone(),
                        step: name.clone(),
                        number: a.number,
                    });
                }
            }
        }
        for at in refs {
            self.plan_attempt(&at, now, plan);
        }
    }

    /// One attempt in flight, by phase: a trigger waits for its answer, is reconciled or sent
    /// again; an active run is held to its timeouts and, once cancelled, to its cancel.
    fn plan_attempt(&mut self, at: &AttemptRef, now: DateTime<Utc>, plan: &mut Plan) {
        let busy = self.in_flight.triggers.contains(at)
            || self.in_flight.reconciles.contains(at)
            || self.in_flight.cancels.contains(at);
        let Some(a) = self.attempt_mut(at) else {
            return;
        };
        match a.phase {
            AttemptPhase::Finished => {}
            // A call about it is outstanding: its answer decides what comes next.
            AttemptPhase::Triggering if busy => {}
            AttemptPhase::Triggering => {
                // A search for the key comes first; a re-send only once none is wanted.
                let (when, reconcile) = match (a.reconcile_at, a.resend_at) {
                    (Some(when), _) => (when, true),
                    (None, Some(when)) => (when, false),
                    (None, None) => return,
                };
                if when > now {
                    plan.wake_at = earliest(plan.wake_at, when);
                } else if reconcile {
                    self.plan_reconcile(at, plan);
                } else {
                    self.plan_resend(at, now, plan);
                }
            }
            AttemptPhase::Active => {
                let Some(run_id) = a.run_id else {
                    return;
                };
                if a.cancel.is_none() {
                    self.enforce_timeouts(at, run_id, now, plan);
                }
                if !busy {
                    self.plan_cancel(at, run_id, now, plan);
                }
            }
        }
    }

    /// Records how long a successful run took: by dbt Cloud's own timestamps when it sent both,
    /// else from the trigger's acceptance to now (longer by the polling delay).
    fn learn_duration(&mut self, at: &AttemptRef, run: &Run, now: DateTime<Utc>) {
        let Some(a) = self.attempt_mut(at) else {
            return;
        };
        let took = match (run.created_at, run.finished_at) {
            (Some(created), Some(finished)) => finished.0 - created.0,
            _ => now - a.accepted_at.unwrap_or(a.created_at),
        };
        let Ok(ms) = u64::try_from(took.num_milliseconds()) else {
            return;
        };
        a.run_duration_ms = Some(ms);
        let job = a.job_id;
        let account = self.account_of(at);
        self.durations.record(&account, job, took);
    }

    /// When to look next at a watched run after a look at `now`.
    fn next_look(&self, run: RunId, now: DateTime<Utc>) -> DateTime<Utc> {
        let interval = to_chrono(self.config.poll_interval);
        let Some(at) = self.index.by_dbt_run.get(&run) else {
            return now + interval;
        };
        let Some(a) = self.attempt(at) else {
            return now + interval;
        };
        let expected = if self.config.predict_polls {
            self.state
                .runs
                .get(&at.run)
                .and_then(|r| super::accounts::account_of_step(r, &at.step.0))
                .map_or_else(
                    || self.durations.expected(&AccountName::default(), a.job_id),
                    |account| self.durations.expected(account, a.job_id),
                )
        } else {
            None
        };
        predict::next_look(
            expected,
            a.accepted_at.unwrap_or(a.created_at),
            now,
            interval,
        )
    }

    /// Searches the job's runs for the attempt's key (its `reconcile_at` has come).
    fn plan_reconcile(&mut self, at: &AttemptRef, plan: &mut Plan) {
        let Some(a) = self.attempt_mut(at) else {
            return;
        };
        let action = Action::Reconcile {
            attempt: at.clone(),
            job: a.job_id,
            key: a.key.clone(),
            rerun_of: rerun_of(&a.kind),
        };
        self.in_flight.reconciles.insert(at.clone());
        plan.actions.push(action);
    }

    /// Sends a trigger again (its `resend_at` has come: nothing was created), unless the attempt
    /// was cancelled meanwhile.
    fn plan_resend(&mut self, at: &AttemptRef, now: DateTime<Utc>, plan: &mut Plan) {
        let Some(a) = self.attempt_mut(at) else {
            return;
        };
        if a.cancel.is_some() {
            // Nothing was created and nobody wants it any more.
            self.finish_attempt(at, AttemptOutcome::CancelledByBaton, None, now);
            return;
        }
        a.resend_at = None;
        a.sends += 1;
        let action = Action::Trigger {
            attempt: at.clone(),
            job: a.job_id,
            request: Box::new(a.request.clone()),
            rerun_of: rerun_of(&a.kind),
        };
        let sends = a.sends;
        self.mark_changed(at.run.clone());
        self.in_flight.triggers.insert(at.clone());
        plan.actions.push(action);
        self.note_attempt(
            now,
            at,
            TransitionKind::TriggerResent,
            format!("send {sends}: no run carries the key"),
        );
    }

    /// Asks for a cancel when the step's `timeout` (whole attempt) or `queue_timeout` (time in
    /// dbt Cloud's queue) has passed; otherwise wakes when the sooner one will.
    fn enforce_timeouts(
        &mut self,
        at: &AttemptRef,
        run_id: RunId,
        now: DateTime<Utc>,
        plan: &mut Plan,
    ) {
        let Some(run) = self.state.runs.get(&at.run) else {
            return;
        };
        let def = run.definition.clone();
        let Some(step) = def.step(&at.step) else {
            return;
        };
        let Some(a) = self.attempt_mut(at) else {
            return;
        };
        let started = a.accepted_at.unwrap_or(a.created_at);
        let mut reason = None;
        if let Some(limit) = step.limits.timeout {
            let deadline = started + to_chrono(limit);
            if deadline <= now {
                reason = Some(CancelReason::Timeout);
            } else {
                plan.wake_at = earliest(plan.wake_at, deadline);
            }
        }
        if let (Some(limit), Some(since), true) = (
            step.limits.queue_timeout,
            a.queued_since,
            a.status.is_some_and(|s| s.is_queued()),
        ) {
            let deadline = since + to_chrono(limit);
            if deadline <= now {
                reason = reason.or(Some(CancelReason::QueueTimeout));
            } else {
                plan.wake_at = earliest(plan.wake_at, deadline);
            }
        }
        if let Some(reason) = reason {
            a.cancel = Some(CancelRequest {
                reason,
                requested_at: now,
                acknowledged: false,
            });
            self.mark_changed(at.run.clone());
            self.note_attempt(
                now,
                at,
                TransitionKind::CancelRequested,
                format!("{reason:?} exceeded; cancelling run {run_id}"),
            );
        }
    }

    /// Sends the cancel an attempt asks for until dbt Cloud acknowledges it, once per poll
    /// interval.
    fn plan_cancel(&mut self, at: &AttemptRef, run_id: RunId, now: DateTime<Utc>, plan: &mut Plan) {
        let poll_interval = to_chrono(self.config.poll_interval);
        let Some(a) = self.attempt_mut(at) else {
            return;
        };
        if a.cancel.as_ref().is_none_or(|c| c.acknowledged) {
            return;
        }
        let retry_at = self.due.cancel_retry.get(at).copied();
        if retry_at.is_some_and(|t| t > now) {
            plan.wake_at = earliest(plan.wake_at, retry_at.unwrap_or(now));
            return;
        }
        self.due
            .cancel_retry
            .insert(at.clone(), now + poll_interval);
        self.in_flight.cancels.insert(at.clone());
        plan.actions.push(Action::Cancel {
            attempt: at.clone(),
            run: run_id,
        });
    }

    /// Looks at the runs that are due (each on its own schedule, see `predict`) in one batched
    /// request, filled up with the runs due soonest after them; one poll at a time.
    pub(super) fn plan_poll(&mut self, now: DateTime<Utc>, plan: &mut Plan) {
        if self.in_flight.poll {
            return;
        }
        let Some(due) = self.due.polls.next() else {
            return;
        };
        if due > now {
            plan.wake_at = earliest(plan.wake_at, due);
            return;
        }
        let mut runs = self.due.polls.batch(now, POLL_PAGE);
        // A run no longer watched (its attempt finished) leaves the schedule here at the latest.
        for run in runs
            .iter()
            .filter(|r| !self.index.by_dbt_run.contains_key(r))
        {
            self.due.polls.remove(*run);
        }
        runs.retain(|r| self.index.by_dbt_run.contains_key(r));
        for &run in &runs {
            let next = self.next_look(run, now);
            self.due.polls.set(run, next);
        }
        if let Some(next) = self.due.polls.next() {
            plan.wake_at = earliest(plan.wake_at, next);
        }
        if runs.is_empty() {
            return;
        }
        self.in_flight.poll = true;
        plan.actions.push(Action::Poll { runs });
    }
}

/// The failed run a rerun-from-failure attempt resumes, if it is one.
fn rerun_of(kind: &super::state::AttemptKind) -> Option<RunId> {
    match kind {
        super::state::AttemptKind::RerunFrom { failed_run } => Some(*failed_run),
        super::state::AttemptKind::Trigger => None,
    }
}
