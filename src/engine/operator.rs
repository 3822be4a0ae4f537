//! Operator requests: trigger a pipeline now, cancel or retry a pipeline run, pause and resume,
//! create, preview or cancel a backfill. Each is carried out whole or refused with the reason
//! (`OperatorError`); the rules of what may be done to what live here and nowhere else.

use super::backfill::BackfillSpec;
use super::event::{BackfillRequest, OperatorDate, OperatorError, OperatorRequest, Outcome};
use super::state::{CancelReason, PipelineRunId, PipelineRunState, RunOrigin, StepState};
use super::Engine;
use crate::model::pipeline::PipelineName;
use chrono::{DateTime, NaiveDate, NaiveDateTime, SubsecRound, TimeZone, Utc};
use chrono_tz::Tz;

/// Whether a pipeline run in `state` may be retried.
pub fn is_retryable(state: PipelineRunState) -> bool {
    matches!(
        state,
        PipelineRunState::Failed | PipelineRunState::Cancelled
    )
}

/// Steps a retry runs again.
fn runs_again(state: &StepState) -> bool {
    matches!(
        state,
        StepState::Failed | StepState::UpstreamFailed | StepState::Cancelled
    )
}

/// An instant from `2026-03-01T02:00:00Z`, `2026-03-01T02:00` (in `tz`) or `2026-03-01` (the day's
/// start in `tz`, or its last second with `end_of_day`).
pub fn parse_when(text: &str, tz: Tz, end_of_day: bool) -> Result<DateTime<Utc>, String> {
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    let local = |naive: NaiveDateTime| {
        tz.from_local_datetime(&naive)
            .earliest()
            .map(|t| t.with_timezone(&Utc))
            .ok_or_else(|| format!("{text} does not exist in {tz} (a DST gap)"))
    };
    for format in ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(text, format) {
            return local(naive);
        }
    }
    if let Ok(day) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        let start = |d: NaiveDate| local(d.and_hms_opt(0, 0, 0).unwrap_or_default());
        return if end_of_day {
            let next = day
                .succ_opt()
                .ok_or_else(|| format!("{text} is out of range"))?;
            Ok(start(next)? - chrono::Duration::seconds(1))
        } else {
            start(day)
        };
    }
    Err(format!(
        "`{text}` is not a date: use 2026-03-01, 2026-03-01T02:00 (in the pipeline's zone) or 2026-03-01T02:00:00Z"
    ))
}

impl Engine {
    /// An operator request sent without waiting for its answer (the demo, tests): a refusal is
    /// only logged.
    pub(super) fn on_operator(&mut self, request: OperatorRequest, now: DateTime<Utc>) {
        if let Err(e) = self.operate(request, now) {
            tracing::warn!(error = %e, "operator request refused");
        }
    }

    /// Carries out an operator request, or says why not; nothing changes on a refusal.
    pub fn operate(
        &mut self,
        request: OperatorRequest,
        now: DateTime<Utc>,
    ) -> Result<Outcome, OperatorError> {
        match request {
            OperatorRequest::TriggerPipeline {
                pipeline,
                logical_date,
            } => self.trigger(pipeline, logical_date, now),
            OperatorRequest::CancelPipelineRun { run } => {
                let state = self.known_run(&run)?;
                if state.is_terminal() {
                    return Err(OperatorError::RunOver { run, state });
                }
                self.cancel_pipeline_run(&run, CancelReason::Operator, now);
                Ok(Outcome::RunCancelled(run))
            }
            OperatorRequest::RetryPipelineRun { run } => self.retry(run),
            OperatorRequest::Pause { pipeline } => {
                self.known_pipeline(&pipeline)?;
                self.cursor_mut(&pipeline).paused = true;
                Ok(Outcome::Paused(pipeline))
            }
            OperatorRequest::Resume { pipeline } => {
                self.known_pipeline(&pipeline)?;
                // Ticks that passed while paused were declined on purpose, not missed.
                self.index.ticks.forget(&pipeline);
                let cursor = self.cursor_mut(&pipeline);
                cursor.paused = false;
                cursor.last_tick = Some(now);
                Ok(Outcome::Resumed(pipeline))
            }
            OperatorRequest::CreateBackfill { id, request } => {
                let spec = self.backfill_spec(request)?;
                self.create_backfill(id.clone(), spec, false, now)
                    .map_err(OperatorError::BackfillRefused)?;
                Ok(Outcome::BackfillCreated(id))
            }
            OperatorRequest::PreviewBackfill { id, request } => {
                let spec = self.backfill_spec(request)?;
                self.preview_backfill(&id, &spec)
                    .map(Outcome::BackfillPreviewed)
                    .map_err(OperatorError::BackfillRefused)
            }
            OperatorRequest::CancelBackfill { id } => {
                let Some(backfill) = self.state.backfills.get(&id) else {
                    return Err(OperatorError::UnknownBackfill(id));
                };
                if backfill.state.is_terminal() {
                    let state = backfill.state;
                    return Err(OperatorError::BackfillOver {
                        backfill: id,
                        state,
                    });
                }
                self.cancel_backfill(&id, now);
                Ok(Outcome::BackfillCancelled(id))
            }
        }
    }

    fn known_pipeline(&self, name: &PipelineName) -> Result<(), OperatorError> {
        match self.pipelines.contains_key(name) {
            true => Ok(()),
            false => Err(OperatorError::UnknownPipeline(name.clone())),
        }
    }

    fn known_run(&self, run: &PipelineRunId) -> Result<PipelineRunState, OperatorError> {
        self.state
            .run_state(run)
            .ok_or_else(|| OperatorError::UnknownRun(run.clone()))
    }

    /// A date the operator gave, read in `pipeline`'s time zone.
    fn operator_date(
        &self,
        pipeline: &PipelineName,
        date: &OperatorDate,
        end_of_day: bool,
    ) -> Result<DateTime<Utc>, OperatorError> {
        match date {
            OperatorDate::At(at) => Ok(*at),
            OperatorDate::Text(text) => {
                let tz = self
                    .pipelines
                    .get(pipeline)
                    .and_then(|l| l.def.schedule.as_ref())
                    .map_or(chrono_tz::UTC, |s| s.timezone);
                parse_when(text, tz, end_of_day).map_err(OperatorError::BadDate)
            }
        }
    }

    fn trigger(
        &mut self,
        pipeline: PipelineName,
        logical_date: Option<OperatorDate>,
        now: DateTime<Utc>,
    ) -> Result<Outcome, OperatorError> {
        let Some(loaded) = self.pipelines.get(&pipeline) else {
            return Err(OperatorError::UnknownPipeline(pipeline));
        };
        let def = loaded.def.clone();
        let logical_date = match &logical_date {
            Some(date) => self.operator_date(&pipeline, date, false)?,
            None => now,
        };
        // Run ids carry whole seconds; so does a manual run's logical date.
        let logical_date = logical_date.trunc_subsecs(0);
        let run = PipelineRunId::new(&pipeline, logical_date);
        if let Some(state) = self.state.run_state(&run) {
            return Err(OperatorError::RunExists { run, state });
        }
        let interval_start = self
            .pipelines
            .get(&pipeline)
            .and_then(|l| l.schedule.as_ref())
            .and_then(|s| s.previous_before(logical_date))
            .unwrap_or(logical_date);
        match self.admit_run(&def, logical_date, interval_start, RunOrigin::Manual, now) {
            Some(created) => Ok(Outcome::RunCreated(created)),
            // The run id is new, so only the concurrency policy `skip` declines it.
            None => {
                let active = self
                    .index
                    .active
                    .iter()
                    .filter_map(|id| self.state.runs.get(id))
                    .find(|r| r.pipeline() == &pipeline && !r.is_backfill())
                    .map(|r| r.id.clone())
                    .unwrap_or(run);
                Err(OperatorError::SkippedWhileActive { active })
            }
        }
    }

    /// Runs a failed or cancelled pipeline run's failed, upstream-failed and cancelled steps again.
    fn retry(&mut self, id: PipelineRunId) -> Result<Outcome, OperatorError> {
        let state = self.known_run(&id)?;
        if !is_retryable(state) {
            return Err(OperatorError::NotRetryable { run: id, state });
        }
        // An archived run is known by its state alone until the runtime recalls its record.
        let Some(run) = self.state.runs.get_mut(&id) else {
            return Err(OperatorError::UnknownRun(id));
        };
        for step in run.steps.values_mut() {
            if runs_again(&step.state) {
                step.state = StepState::Pending;
            }
        }
        run.state = PipelineRunState::Queued;
        run.finished_at = None;
        run.cancel_reason = None;
        let pipeline = run.pipeline().clone();
        self.index.active.insert(id.clone(), &pipeline, true);
        self.mark_changed(id.clone());
        Ok(Outcome::RunRetried(id))
    }

    /// The backfill an operator asked for, its dates read in the pipeline's zone.
    fn backfill_spec(&self, request: BackfillRequest) -> Result<BackfillSpec, OperatorError> {
        self.known_pipeline(&request.pipeline)?;
        Ok(BackfillSpec {
            from: self.operator_date(&request.pipeline, &request.from, false)?,
            to: self.operator_date(&request.pipeline, &request.to, true)?,
            pipeline: request.pipeline,
            every: request.every,
            max_active: request.max_active,
            reprocess: request.reprocess,
            deadline: request.deadline,
        })
    }
}

impl Engine {
    /// Cancels every active pipeline run (shutdown with `on_shutdown: cancel`).
    pub fn cancel_everything(&mut self, reason: CancelReason, now: DateTime<Utc>) {
        let active: Vec<_> = self.index.active.iter().cloned().collect();
        for id in active {
            self.cancel_pipeline_run(&id, reason, now);
        }
    }
}
