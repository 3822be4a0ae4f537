//! Turning schedule ticks into pipeline runs: on-time ticks, catch-up of missed ones after downtime,
//! and the pipeline's concurrency policy when the previous run is still active.

use super::event::{Plan, TransitionKind};
use super::state::{
    CancelReason, PipelineRun, PipelineRunId, PipelineRunState, RunOrigin, ScheduleCursor, StepRun,
};
use super::{earliest, to_chrono, Engine};
use crate::model::pipeline::{CatchupPolicy, ConcurrencyPolicy, Pipeline, PipelineName};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::sync::Arc;

impl Engine {
    pub(super) fn plan_schedules(&mut self, now: DateTime<Utc>, plan: &mut Plan) {
        // Only pipelines whose next tick is due (or not yet known) need work; a pipeline that is
        // paused, suspended or unscheduled leaves the cache until a resume or reload.
        for name in self.index.ticks.take_due(now) {
            let Some(loaded) = self.pipelines.get(&name) else {
                continue;
            };
            let (Some(schedule), def) = (loaded.schedule.clone(), loaded.def.clone()) else {
                continue;
            };
            if def.suspended {
                continue;
            }
            let cursor = self.state.cursors.entry(name.clone()).or_default();
            if cursor.paused {
                continue;
            }
            let Some(last_tick) = cursor.last_tick else {
                // First sight of this pipeline: its schedule starts now, nothing before is "missed".
                cursor.last_tick = Some(now);
                self.outbox.cursors.insert(name.clone());
                if let Some(next) = schedule.next_after(now) {
                    self.index.ticks.set(&name, next);
                }
                continue;
            };
            let catchup = def.schedule.as_ref().map(|s| s.catchup).unwrap_or_default();
            let limit = self.config.catchup_max.max(1);
            // One more than we could ever run, to know whether ticks were dropped.
            let due = schedule.ticks_between(last_tick, now, limit + 1);
            if let Some(&newest) = due.last() {
                let grace = to_chrono(self.config.on_time_grace);
                let on_time = due.len() == 1 && now - newest <= grace;
                let run_ticks: Vec<DateTime<Utc>> = if on_time {
                    due.clone()
                } else {
                    // Re-read the true newest tick: `due` may have stopped at the cap.
                    let newest = schedule_newest(&schedule, newest, now);
                    let chosen = match catchup {
                        CatchupPolicy::None => Vec::new(),
                        CatchupPolicy::Latest => vec![newest],
                        CatchupPolicy::All => newest_ticks(&schedule, last_tick, now, limit),
                    };
                    self.outbox.transitions.push(super::event::Transition {
                        at: now,
                        pipeline: name.clone(),
                        run: None,
                        step: None,
                        attempt: None,
                        dbt_run: None,
                        href: None,
                        what: TransitionKind::TicksMissed,
                        detail: format!(
                            "ticks missed since {last_tick}; catch-up policy {catchup:?} runs {} of them",
                            chosen.len()
                        ),
                    });
                    chosen
                };
                let newest_seen = schedule_newest(&schedule, newest, now);
                for tick in run_ticks {
                    let origin = if on_time {
                        RunOrigin::Schedule
                    } else {
                        RunOrigin::Catchup
                    };
                    let interval_start = schedule.previous_before(tick).unwrap_or(tick);
                    self.admit_run(&def, tick, interval_start, origin, now);
                }
                if let Some(cursor) = self.state.cursors.get_mut(&name) {
                    cursor.last_tick = Some(newest_seen);
                }
                self.outbox.cursors.insert(name.clone());
            }
            let after = self
                .state
                .cursors
                .get(&name)
                .and_then(|c| c.last_tick)
                .unwrap_or(now)
                .max(now);
            if let Some(next) = schedule.next_after(after) {
                self.index.ticks.set(&name, next);
            }
        }
        if let Some(next) = self.index.ticks.earliest() {
            plan.wake_at = earliest(plan.wake_at, next);
        }
    }

    /// Creates a pipeline run for a tick, applying the pipeline's concurrency policy.
    pub(super) fn admit_run(
        &mut self,
        def: &Arc<Pipeline>,
        logical_date: DateTime<Utc>,
        interval_start: DateTime<Utc>,
        origin: RunOrigin,
        now: DateTime<Utc>,
    ) -> Option<PipelineRunId> {
        let id = PipelineRunId::new(&def.name, logical_date);
        self.admit_run_as(def, id, logical_date, interval_start, origin, now)
    }

    /// `admit_run` under a given id (a backfill re-running a date uses a distinct one).
    pub(super) fn admit_run_as(
        &mut self,
        def: &Arc<Pipeline>,
        id: PipelineRunId,
        logical_date: DateTime<Utc>,
        interval_start: DateTime<Utc>,
        origin: RunOrigin,
        now: DateTime<Utc>,
    ) -> Option<PipelineRunId> {
        if self.state.knows_run(&id) {
            return None;
        }
        let active_regular: Vec<PipelineRunId> = self
            .index
            .active
            .of_pipeline(&def.name)
            .iter()
            .filter_map(|rid| self.state.runs.get(rid))
            .filter(|r| !r.is_backfill())
            .map(|r| r.id.clone())
            .collect();
        let backfill = matches!(origin, RunOrigin::Backfill { .. });
        // Missed ticks the catch-up policy chose to run queue behind each other and behind a run
        // still active: under `skip` they would drop all but the oldest, under `cancel_running`
        // cancel each other.
        let catchup = origin == RunOrigin::Catchup;
        if !active_regular.is_empty() && !backfill && !catchup {
            match def.concurrency {
                ConcurrencyPolicy::Skip => {
                    self.outbox.transitions.push(super::event::Transition {
                        at: now,
                        pipeline: def.name.clone(),
                        run: Some(id),
                        step: None,
                        attempt: None,
                        dbt_run: None,
                        href: None,
                        what: TransitionKind::TickSkipped,
                        detail: format!(
                            "skipped: the previous run {} is still active (concurrency: skip)",
                            active_regular[0]
                        ),
                    });
                    return None;
                }
                ConcurrencyPolicy::Queue => {}
                ConcurrencyPolicy::CancelRunning => {
                    for old in &active_regular {
                        self.cancel_pipeline_run(old, CancelReason::Superseded, now);
                    }
                }
            }
        }
        let steps = def
            .steps
            .iter()
            .map(|s| (s.name.clone(), StepRun::new()))
            .collect::<BTreeMap<_, _>>();
        let deadline = self.deadline_of(def, logical_date, &origin);
        let run = PipelineRun {
            id: id.clone(),
            definition: def.clone(),
            logical_date,
            data_interval_start: interval_start,
            origin,
            state: PipelineRunState::Queued,
            created_at: now,
            started_at: None,
            finished_at: None,
            cancel_reason: None,
            steps,
            deadline,
            late_since: None,
        };
        self.note(
            now,
            &run,
            TransitionKind::PipelineRunCreated,
            match &run.origin {
                RunOrigin::Schedule => "scheduled".to_string(),
                RunOrigin::Catchup => "catch-up of a missed tick".to_string(),
                RunOrigin::Manual => "manual".to_string(),
                RunOrigin::Backfill { backfill } => format!("backfill {backfill}"),
            },
        );
        self.state.runs.insert(id.clone(), run);
        self.index.active.insert(id.clone(), &def.name, true);
        self.mark_changed(id.clone());
        Some(id)
    }

    /// Starts queued runs whose pipeline has no other regular run running (oldest first).
    /// Backfill runs start beside the regular schedule, under their backfill's `max_active`.
    pub(super) fn plan_queued_runs(&mut self, now: DateTime<Utc>) {
        let (queued, moved_on): (Vec<PipelineRunId>, Vec<PipelineRunId>) = self
            .index
            .active
            .maybe_queued()
            .iter()
            .cloned()
            .partition(|id| {
                self.state
                    .runs
                    .get(id)
                    .is_some_and(|r| r.state == PipelineRunState::Queued)
            });
        for id in &moved_on {
            self.index.active.not_queued(id);
        }
        let mut started: Vec<PipelineName> = Vec::new();
        let mut order: Vec<(DateTime<Utc>, PipelineRunId)> = queued
            .into_iter()
            .filter_map(|id| self.state.runs.get(&id).map(|r| (r.logical_date, id)))
            .collect();
        order.sort();
        for (_, id) in order {
            let Some(run) = self.state.runs.get(&id) else {
                continue;
            };
            let pipeline = run.pipeline().clone();
            let backfill = run.is_backfill();
            let blocked = !backfill
                && (started.contains(&pipeline)
                    || self
                        .index
                        .active
                        .of_pipeline(&pipeline)
                        .iter()
                        .any(|other| {
                            self.state.runs.get(other).is_some_and(|o| {
                                !o.is_backfill() && o.state == PipelineRunState::Running
                            })
                        }));
            let backfill_full = match &run.origin {
                RunOrigin::Backfill { backfill } => {
                    self.backfill_running_runs(backfill) >= self.backfill_limit(backfill)
                }
                _ => false,
            };
            if blocked || backfill_full {
                continue;
            }
            if let Some(run) = self.state.runs.get_mut(&id) {
                run.state = PipelineRunState::Running;
                run.started_at = Some(now);
            }
            self.index.active.not_queued(&id);
            self.mark_changed(id.clone());
            self.note_id(now, &id, TransitionKind::PipelineRunStarted, String::new());
            if !backfill {
                started.push(pipeline);
            }
        }
    }

    /// Records that a pipeline was seen at `tick` without running it (used by pause/resume).
    pub(super) fn cursor_mut(&mut self, name: &PipelineName) -> &mut ScheduleCursor {
        self.outbox.cursors.insert(name.clone());
        self.state.cursors.entry(name.clone()).or_default()
    }
}

/// The newest `limit` ticks in (after, now], oldest first: walked backwards from `now` so that a
/// long downtime costs `limit` searches, not one per missed tick.
fn newest_ticks(
    schedule: &crate::model::schedule::Schedule,
    after: DateTime<Utc>,
    now: DateTime<Utc>,
    limit: usize,
) -> Vec<DateTime<Utc>> {
    let mut ticks = Vec::with_capacity(limit);
    let mut cursor = now + chrono::Duration::seconds(1);
    while ticks.len() < limit {
        match schedule.previous_before(cursor) {
            Some(t) if t > after => {
                ticks.push(t);
                cursor = t;
            }
            _ => break,
        }
    }
    ticks.reverse();
    ticks
}

/// The newest tick at or before `now`, starting from a known tick `from`.
fn schedule_newest(
    schedule: &crate::model::schedule::Schedule,
    from: DateTime<Utc>,
    now: DateTime<Utc>,
) -> DateTime<Utc> {
    match schedule.previous_before(now + chrono::Duration::seconds(1)) {
        Some(t) if t >= from && t <= now => t,
        _ => from,
    }
}
