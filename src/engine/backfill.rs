//! Backfills: a persisted set of pipeline runs for past logical dates (the pipeline's fire times in
//! a range, or one per `every`), started under the backfill's own `max_active` beside the regular
//! schedule, resumed after a restart, cancellable as a whole; and rolling backfills, which a
//! pipeline's `backfill:` section creates on each tick of its own schedule.

use super::event::{Plan, TransitionKind};
use super::state::{AttemptKey, PipelineRunId, PipelineRunState, RunOrigin};
use super::{earliest, to_chrono, Engine};
use crate::model::pipeline::{Pipeline, PipelineName};
use crate::model::template::{render_cause, render_overrides, TemplateContext};
use chrono::{DateTime, Utc};
use std::time::Duration;

pub use super::event::{BackfillError, PreviewDate, PreviewTrigger};
pub use super::state::{
    Backfill, BackfillDate, BackfillId, BackfillSpec, BackfillState, Reprocess,
};

/// Most logical dates one backfill may hold.
pub const MAX_DATES: usize = 1000;

impl BackfillState {
    pub fn is_terminal(self) -> bool {
        self != Self::Running
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

impl Engine {
    /// The dates a backfill would run, with the run ids and rendered trigger bodies: the dry run,
    /// and the check before creating one.
    pub fn preview_backfill(
        &self,
        id: &BackfillId,
        spec: &BackfillSpec,
    ) -> Result<Vec<PreviewDate>, BackfillError> {
        if self.state.backfills.contains_key(id) {
            return Err(BackfillError::Exists(id.clone()));
        }
        let loaded = self
            .pipelines
            .get(&spec.pipeline)
            .ok_or_else(|| BackfillError::UnknownPipeline(spec.pipeline.clone()))?;
        if spec.max_active == 0 {
            return Err(BackfillError::Invalid(
                "max_active must be at least 1".into(),
            ));
        }
        if spec.from > spec.to {
            return Err(BackfillError::Invalid(format!(
                "from ({}) is after to ({})",
                spec.from, spec.to
            )));
        }
        let dates = match (spec.every, &loaded.schedule) {
            (Some(every), _) => {
                if every.is_zero() {
                    return Err(BackfillError::Invalid("every must be longer than zero".into()));
                }
                let mut dates = Vec::new();
                let mut d = spec.from;
                while d <= spec.to && dates.len() <= MAX_DATES {
                    dates.push(d);
                    d += to_chrono(every);
                }
                dates
            }
            (None, Some(schedule)) => schedule.ticks_between(
                spec.from - chrono::Duration::seconds(1),
                spec.to,
                MAX_DATES + 1,
            ),
            (None, None) => {
                return Err(BackfillError::Invalid(format!(
                    "pipeline `{}` has no schedule, so it has no fire times to backfill; give `every` (e.g. --every 1d)",
                    spec.pipeline
                )))
            }
        };
        if dates.is_empty() {
            return Err(BackfillError::Invalid(format!(
                "no fire time of `{}` between {} and {}; widen the range or give `every`",
                spec.pipeline, spec.from, spec.to
            )));
        }
        if dates.len() > MAX_DATES {
            return Err(BackfillError::Invalid(format!(
                "more than {MAX_DATES} dates; split the backfill into smaller ranges"
            )));
        }
        let def = loaded.def.clone();
        Ok(dates
            .into_iter()
            .map(|d| {
                let (run, skipped) = self.date_run(&def.name, d, id, spec.reprocess);
                let triggers = match &run {
                    Some(run) => self.render_triggers(&def, run, d, spec.every),
                    None => Vec::new(),
                };
                PreviewDate {
                    logical_date: d,
                    run,
                    skipped,
                    triggers,
                }
            })
            .collect())
    }

    /// Which pipeline run a backfill uses for a date, or why it skips it.
    fn date_run(
        &self,
        pipeline: &PipelineName,
        date: DateTime<Utc>,
        backfill: &BackfillId,
        reprocess: Reprocess,
    ) -> (Option<PipelineRunId>, Option<String>) {
        let plain = PipelineRunId::new(pipeline, date);
        let again = PipelineRunId::reprocessed(pipeline, date, &backfill.0);
        let Some(state) = self.state.run_state(&plain) else {
            return (Some(plain), None);
        };
        let ran = |what: &str| {
            (
                None,
                Some(format!(
                    "already ran ({what}: {plain}); --reprocess {} keeps it",
                    match reprocess {
                        Reprocess::None => "none",
                        Reprocess::Failed => "failed",
                        Reprocess::All => "all",
                    }
                )),
            )
        };
        if !state.is_terminal() {
            return (
                None,
                Some(format!("a run of this date is active ({plain})")),
            );
        }
        let state_name = format!("{state:?}").to_lowercase();
        match reprocess {
            Reprocess::None => ran(&state_name),
            Reprocess::Failed if state == PipelineRunState::Succeeded => ran(&state_name),
            Reprocess::Failed | Reprocess::All => (Some(again), None),
        }
    }

    fn render_triggers(
        &self,
        def: &Pipeline,
        run: &PipelineRunId,
        date: DateTime<Utc>,
        every: Option<Duration>,
    ) -> Vec<PreviewTrigger> {
        let interval_start = self.interval_start(def, date, every);
        def.steps
            .iter()
            .map(|step| {
                let ctx = TemplateContext {
                    logical_date: date,
                    timezone: def.schedule.as_ref().map_or(chrono_tz::UTC, |s| s.timezone),
                    data_interval_start: interval_start,
                    data_interval_end: date,
                    pipeline: def.name.0.clone(),
                    step: step.name.0.clone(),
                    attempt: 1,
                    is_backfill: true,
                };
                let key = AttemptKey::derive(run, &step.name, 1);
                match render_overrides(&step.overrides, &ctx) {
                    Ok(mut body) => {
                        body.cause = render_cause(def, &ctx, &key.0);
                        PreviewTrigger {
                            step: step.name.clone(),
                            job_id: step.job_id,
                            body: Some(body),
                            error: None,
                        }
                    }
                    Err(e) => PreviewTrigger {
                        step: step.name.clone(),
                        job_id: step.job_id,
                        body: None,
                        error: Some(e.to_string()),
                    },
                }
            })
            .collect()
    }

    fn interval_start(
        &self,
        def: &Pipeline,
        date: DateTime<Utc>,
        every: Option<Duration>,
    ) -> DateTime<Utc> {
        if let Some(every) = every {
            return date - to_chrono(every);
        }
        self.pipelines
            .get(&def.name)
            .and_then(|l| l.schedule.as_ref())
            .and_then(|s| s.previous_before(date))
            .unwrap_or(date)
    }

    /// Creates a backfill (an operator request, or a rolling backfill's tick).
    pub(super) fn create_backfill(
        &mut self,
        id: BackfillId,
        spec: BackfillSpec,
        rolling: bool,
        now: DateTime<Utc>,
    ) -> Result<(), BackfillError> {
        let preview = self.preview_backfill(&id, &spec)?;
        let dates = preview
            .into_iter()
            .map(|p| BackfillDate {
                logical_date: p.logical_date,
                run: p.run,
                skipped: p.skipped,
                started: false,
            })
            .collect();
        self.outbox.transitions.push(super::event::Transition {
            at: now,
            pipeline: spec.pipeline.clone(),
            run: None,
            step: None,
            attempt: None,
            dbt_run: None,
            href: None,
            what: TransitionKind::BackfillCreated,
            detail: format!(
                "backfill {id} from {} to {}, at most {} at once",
                spec.from, spec.to, spec.max_active
            ),
        });
        self.state.backfills.insert(
            id.clone(),
            Backfill {
                id: id.clone(),
                spec,
                rolling,
                state: BackfillState::Running,
                created_at: now,
                finished_at: None,
                dates,
            },
        );
        self.outbox.backfills.insert(id);
        Ok(())
    }

    /// Cancels a backfill: dates not started never start, its active runs are cancelled.
    pub(super) fn cancel_backfill(&mut self, id: &BackfillId, now: DateTime<Utc>) {
        let Some(backfill) = self.state.backfills.get_mut(id) else {
            return;
        };
        if backfill.state.is_terminal() {
            return;
        }
        backfill.state = BackfillState::Cancelled;
        backfill.finished_at = Some(now);
        let runs: Vec<PipelineRunId> = backfill
            .dates
            .iter()
            .filter(|d| d.started)
            .filter_map(|d| d.run.clone())
            .collect();
        self.outbox.backfills.insert(id.clone());
        for run in runs {
            self.cancel_pipeline_run(&run, super::state::CancelReason::Operator, now);
        }
    }

    /// Pipeline runs of a backfill that are not over.
    pub(super) fn backfill_active_runs(&self, id: &BackfillId) -> usize {
        self.index
            .active
            .iter()
            .filter_map(|r| self.state.runs.get(r))
            .filter(|r| matches!(&r.origin, RunOrigin::Backfill { backfill } if backfill == &id.0))
            .count()
    }

    /// Pipeline runs of a backfill that are running (not queued).
    pub(super) fn backfill_running_runs(&self, id: &str) -> usize {
        self.index
            .active
            .iter()
            .filter_map(|r| self.state.runs.get(r))
            .filter(|r| r.state == PipelineRunState::Running)
            .filter(|r| matches!(&r.origin, RunOrigin::Backfill { backfill } if backfill == id))
            .count()
    }

    /// The `max_active` of the backfill a run belongs to.
    pub(super) fn backfill_limit(&self, id: &str) -> usize {
        self.state
            .backfills
            .get(&BackfillId(id.to_string()))
            .map_or(1, |b| b.spec.max_active.max(1) as usize)
    }

    /// Starts the next dates of each running backfill while it has room, and ends backfills whose
    /// dates all ran.
    pub(super) fn plan_backfills(&mut self, now: DateTime<Utc>) {
        let running: Vec<BackfillId> = self
            .state
            .backfills
            .values()
            .filter(|b| b.state == BackfillState::Running)
            .map(|b| b.id.clone())
            .collect();
        for id in running {
            let mut active = self.backfill_active_runs(&id);
            let Some(backfill) = self.state.backfills.get(&id) else {
                continue;
            };
            let limit = backfill.spec.max_active.max(1) as usize;
            let spec = backfill.spec.clone();
            let Some(def) = self.pipelines.get(&spec.pipeline).map(|l| l.def.clone()) else {
                // The pipeline was removed from the files: nothing more of it can start.
                if active == 0 {
                    self.end_backfill(&id, now);
                }
                continue;
            };
            let pending: Vec<(usize, DateTime<Utc>, PipelineRunId)> = backfill
                .dates
                .iter()
                .enumerate()
                .filter(|(_, d)| !d.started)
                .filter_map(|(i, d)| d.run.clone().map(|r| (i, d.logical_date, r)))
                .collect();
            for (index, date, run) in pending {
                if active >= limit {
                    break;
                }
                let interval_start = self.interval_start(&def, date, spec.every);
                let origin = RunOrigin::Backfill {
                    backfill: id.0.clone(),
                };
                let admitted = self.admit_run_as(&def, run, date, interval_start, origin, now);
                if let Some(b) = self.state.backfills.get_mut(&id) {
                    b.dates[index].started = true;
                    if admitted.is_none() {
                        b.dates[index].skipped =
                            Some("a pipeline run with this id exists already".into());
                    }
                }
                self.outbox.backfills.insert(id.clone());
                if admitted.is_some() {
                    active += 1;
                }
            }
            let all_started = self
                .state
                .backfills
                .get(&id)
                .is_some_and(|b| b.dates.iter().all(|d| d.started || d.run.is_none()));
            if all_started && active == 0 {
                self.end_backfill(&id, now);
            }
        }
    }

    fn end_backfill(&mut self, id: &BackfillId, now: DateTime<Utc>) {
        let Some(backfill) = self.state.backfills.get(id) else {
            return;
        };
        let never_started = backfill.dates.iter().any(|d| d.run.is_some() && !d.started);
        let all_ok = !never_started
            && backfill
                .dates
                .iter()
                .filter(|d| d.started && d.skipped.is_none())
                .filter_map(|d| d.run.as_ref())
                .all(|r| {
                    self.state
                        .run_state(r)
                        .is_none_or(|s| s == PipelineRunState::Succeeded)
                });
        let pipeline = backfill.spec.pipeline.clone();
        if let Some(b) = self.state.backfills.get_mut(id) {
            b.state = if all_ok {
                BackfillState::Succeeded
            } else {
                BackfillState::Failed
            };
            b.finished_at = Some(now);
        }
        self.outbox.backfills.insert(id.clone());
        self.outbox.transitions.push(super::event::Transition {
            at: now,
            pipeline,
            run: None,
            step: None,
            attempt: None,
            dbt_run: None,
            href: None,
            what: TransitionKind::BackfillFinished,
            detail: format!(
                "backfill {id} {}",
                if all_ok { "succeeded" } else { "failed" }
            ),
        });
    }

    /// Rolling backfills: on each on-time tick of a pipeline's `backfill.schedule`, a backfill of
    /// the `window` before it. Missed ticks are not caught up.
    pub(super) fn plan_rolling(&mut self, now: DateTime<Utc>, plan: &mut Plan) {
        let rolling: Vec<(PipelineName, crate::model::schedule::Schedule)> = self
            .rolling
            .iter()
            .filter_map(|n| self.pipelines.get(n).map(|l| (n, l)))
            .filter(|(_, l)| !l.def.suspended)
            .filter_map(|(n, l)| l.rolling.clone().map(|s| (n.clone(), s)))
            .collect();
        for (name, schedule) in rolling {
            if self.state.cursors.get(&name).is_some_and(|c| c.paused) {
                continue;
            }
            let key = rolling_cursor(&name);
            let last = self.state.cursors.get(&key).and_then(|c| c.last_tick);
            let Some(last) = last else {
                self.cursor_mut(&key).last_tick = Some(now);
                if let Some(next) = schedule.next_after(now) {
                    plan.wake_at = earliest(plan.wake_at, next);
                }
                continue;
            };
            let due = schedule.ticks_between(last, now, 10_000);
            if let Some(&tick) = due.last() {
                self.cursor_mut(&key).last_tick = Some(tick);
                if now - tick <= to_chrono(self.config.on_time_grace) {
                    self.start_rolling(&name, tick, now);
                }
            }
            if let Some(next) = schedule.next_after(now.max(last)) {
                plan.wake_at = earliest(plan.wake_at, next);
            }
        }
    }

    fn start_rolling(&mut self, name: &PipelineName, tick: DateTime<Utc>, now: DateTime<Utc>) {
        let Some(rb) = self
            .pipelines
            .get(name)
            .and_then(|l| l.def.backfill.clone())
        else {
            return;
        };
        let id = BackfillId(format!("{name}-rolling-{}", tick.format("%Y%m%dT%H%M")));
        let spec = BackfillSpec {
            pipeline: name.clone(),
            from: tick - to_chrono(rb.window),
            to: tick - to_chrono(rb.every),
            every: Some(rb.every),
            max_active: rb.max_active,
            reprocess: Reprocess::All,
            deadline: false,
        };
        if let Err(e) = self.create_backfill(id, spec, true, now) {
            tracing::warn!(pipeline = %name, error = %e, "rolling backfill not started");
        }
    }
}

/// The schedule cursor key of a pipeline's rolling backfill (beside the pipeline's own cursor).
pub fn rolling_cursor(name: &PipelineName) -> PipelineName {
    PipelineName(format!("{}~rolling", name.0))
}
