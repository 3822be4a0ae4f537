//! The lifecycle engine: which run moves next and when. Runs of one job go one at a time, the
//! account's run slots are shared oldest first, and every planned transition sits in a time-ordered
//! schedule, so advancing the world costs a few map operations per transition however many runs
//! exist.

use super::run::{finish_with, Ending, LifecycleEvent, LifecycleKind, RunState};
use super::state::{World, CANCELLED_MESSAGE};
use crate::dbt_cloud::time::humanize_duration;
use crate::dbt_cloud::wire::RunStatus;
use crate::ids::{JobId, RunId};
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, BTreeSet};

/// Unfinished runs and their planned transitions.
#[derive(Debug, Default)]
pub struct Schedule {
    /// Unfinished runs of each job, oldest first: the first one has the job's turn.
    by_job: BTreeMap<JobId, BTreeSet<RunId>>,
    /// Unfinished runs that have had their turn; they count against the run slots.
    occupied: usize,
    /// Planned transitions in time order, and each run's entry in it.
    events: BTreeSet<(DateTime<Utc>, RunId)>,
    planned: BTreeMap<RunId, DateTime<Utc>>,
    /// Something changed that may give a waiting run its turn.
    turns_dirty: bool,
}

impl Schedule {
    pub fn admit(&mut self, run: &RunState) {
        self.by_job.entry(run.job_id).or_default().insert(run.id);
        self.turns_dirty = true;
    }

    fn retire(&mut self, run: &RunState) {
        if let Some(runs) = self.by_job.get_mut(&run.job_id) {
            runs.remove(&run.id);
            if runs.is_empty() {
                self.by_job.remove(&run.job_id);
            }
        }
        if run.eligible_since.is_some() {
            self.occupied = self.occupied.saturating_sub(1);
        }
        self.plan(run.id, None);
        self.turns_dirty = true;
    }

    fn plan(&mut self, id: RunId, at: Option<DateTime<Utc>>) {
        if let Some(old) = self.planned.remove(&id) {
            self.events.remove(&(old, id));
        }
        if let Some(at) = at {
            self.planned.insert(id, at);
            self.events.insert((at, id));
        }
    }

    fn next(&self) -> Option<(DateTime<Utc>, RunId)> {
        self.events.first().copied()
    }

    /// Unfinished runs of `job` created before `run`.
    pub fn unfinished_before(&self, job: JobId, run: RunId) -> Vec<RunId> {
        self.by_job
            .get(&job)
            .map(|runs| runs.range(..run).copied().collect())
            .unwrap_or_default()
    }

    #[cfg(test)]
    pub fn unfinished(&self) -> usize {
        self.by_job.values().map(BTreeSet::len).sum()
    }
}

impl World {
    /// The simulation's present: never before an instant already simulated, so that two requests
    /// reading a real clock a moment apart cannot make time go backwards.
    pub fn present(&self, clock_now: DateTime<Utc>) -> DateTime<Utc> {
        clock_now.max(self.sim_time)
    }

    /// Applies, in time order, every transition due at or before `now`.
    pub fn advance(&mut self, now: DateTime<Utc>) {
        loop {
            if self.schedule.turns_dirty {
                self.assign_turns(self.sim_time);
            }
            let Some((at, id)) = self.schedule.next() else {
                break;
            };
            if at > now {
                break;
            }
            self.sim_time = self.sim_time.max(at);
            self.apply_transition(id, at);
        }
        if now > self.sim_time {
            self.sim_time = now;
        }
        if self.schedule.turns_dirty {
            self.assign_turns(self.sim_time);
        }
    }

    /// The next instant something changes by itself, for the background task to sleep until.
    pub fn next_event_at(&self) -> Option<DateTime<Utc>> {
        self.schedule.next().map(|(at, _)| at)
    }

    /// Gives its turn to the first waiting run of each job, oldest first, within the run slots.
    pub(super) fn assign_turns(&mut self, at: DateTime<Utc>) {
        self.schedule.turns_dirty = false;
        let slots = self.scenario.run_slots.map(|s| s as usize);
        let mut heads: Vec<RunId> = self
            .schedule
            .by_job
            .values()
            .filter_map(|runs| runs.first().copied())
            .filter(|id| {
                self.runs
                    .get(id)
                    .is_some_and(|r| r.eligible_since.is_none())
            })
            .collect();
        heads.sort();
        for id in heads {
            if slots.is_some_and(|s| self.schedule.occupied >= s) {
                break;
            }
            if let Some(run) = self.runs.get_mut(&id) {
                run.eligible_since = Some(at);
                self.schedule.occupied += 1;
                self.replan(id);
            }
        }
    }

    /// When `run` moves next by itself, if it does.
    fn next_transition_of(&self, run: &RunState) -> Option<DateTime<Utc>> {
        let timing = &self.scenario.timing;
        match run.status {
            RunStatus::Queued => run
                .eligible_since
                .map(|e| e.max(run.created_at + run.queue_delay)),
            RunStatus::Starting => run.dequeued_at.map(|d| d + timing.start_delay.chrono()),
            RunStatus::Running => [
                run.natural_end(),
                run.timeout_at(),
                run.cancel_requested_at
                    .map(|c| c + timing.cancel_delay.chrono()),
            ]
            .into_iter()
            .flatten()
            .min(),
            _ => None,
        }
    }

    /// Puts the run's next transition in the schedule (or takes it out).
    pub(super) fn replan(&mut self, id: RunId) {
        let at = self.runs.get(&id).and_then(|r| self.next_transition_of(r));
        self.schedule.plan(id, at);
    }

    /// Ends a run: its final status, its webhooks, and its place given to the next in line.
    pub(super) fn end_run(
        &mut self,
        id: RunId,
        ending: Ending,
        at: DateTime<Utc>,
        message: Option<String>,
    ) {
        let Some(run) = self.runs.get_mut(&id) else {
            return;
        };
        let was_running = run.started_at.is_some();
        finish_with(run, ending, at, message);
        self.schedule.retire(run);
        // A run cancelled before it started never ran: no webhook speaks of it.
        if was_running {
            self.outbox.push(LifecycleEvent {
                run_id: id,
                kind: LifecycleKind::Completed,
                at,
            });
            if matches!(ending, Ending::Error { .. }) {
                self.outbox.push(LifecycleEvent {
                    run_id: id,
                    kind: LifecycleKind::Errored,
                    at,
                });
            }
        }
    }

    fn apply_transition(&mut self, id: RunId, at: DateTime<Utc>) {
        let cancel_delay = self.scenario.timing.cancel_delay.chrono();
        let Some(run) = self.runs.get_mut(&id) else {
            return;
        };
        match run.status {
            RunStatus::Queued => {
                run.status = RunStatus::Starting;
                run.dequeued_at = Some(at);
                run.updated_at = at;
                self.replan(id);
            }
            RunStatus::Starting => {
                run.status = RunStatus::Running;
                run.started_at = Some(at);
                run.updated_at = at;
                run.git_sha = Some(run.planned_git_sha.clone());
                let branch = run.request.git_branch.clone();
                run.git_branch = Some(branch.unwrap_or_else(|| "main".into()));
                self.outbox.push(LifecycleEvent {
                    run_id: id,
                    kind: LifecycleKind::Started,
                    at,
                });
                self.replan(id);
            }
            RunStatus::Running => {
                let cancel_at = run.cancel_requested_at.map(|c| c + cancel_delay);
                let timed_out = run.timeout_at().is_some_and(|t| t <= at)
                    && run.natural_end().is_some_and(|n| n > at);
                let (ending, message) = if cancel_at.is_some_and(|c| c <= at) {
                    (Ending::Cancelled, Some(CANCELLED_MESSAGE.to_string()))
                } else if timed_out {
                    let message = format!(
                        "This run timed out after running for {}, which exceeded the configured timeout of {} seconds.",
                        humanize_duration(run.timeout_seconds),
                        run.timeout_seconds
                    );
                    (Ending::TimedOut, Some(message))
                } else if let Some(step) = run.fails_at {
                    (Ending::Error { step }, None)
                } else {
                    (Ending::Success, None)
                };
                self.end_run(id, ending, at, message);
            }
            _ => self.schedule.plan(id, None),
        }
    }
}
