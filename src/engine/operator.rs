//! Operator requests: trigger a pipeline now, cancel or retry a pipeline run, pause and resume.

use super::event::OperatorRequest;
use super::state::{CancelReason, PipelineRunState, RunOrigin, StepState};
use super::Engine;
use chrono::{DateTime, SubsecRound, Utc};

impl Engine {
    pub(super) fn on_operator(&mut self, request: OperatorRequest, now: DateTime<Utc>) {
        match request {
            OperatorRequest::TriggerPipeline {
                pipeline,
                logical_date,
            } => {
                let Some(loaded) = self.pipelines.get(&pipeline) else {
                    return;
                };
                let def = loaded.def.clone();
                // Run ids carry whole seconds; so does a manual run's logical date.
                let logical_date = logical_date.unwrap_or(now).trunc_subsecs(0);
                let interval_start = loaded
                    .schedule
                    .as_ref()
                    .and_then(|s| s.previous_before(logical_date))
                    .unwrap_or(logical_date);
                self.admit_run(&def, logical_date, interval_start, RunOrigin::Manual, now);
            }
            OperatorRequest::CancelPipelineRun { run } => {
                self.cancel_pipeline_run(&run, CancelReason::Operator, now);
            }
            OperatorRequest::RetryPipelineRun { run: id } => {
                let Some(run) = self.state.runs.get_mut(&id) else {
                    return;
                };
                if !matches!(
                    run.state,
                    PipelineRunState::Failed | PipelineRunState::Cancelled
                ) {
                    return;
                }
                for step in run.steps.values_mut() {
                    if matches!(
                        step.state,
                        StepState::Failed | StepState::UpstreamFailed | StepState::Cancelled
                    ) {
                        step.state = StepState::Pending;
                    }
                }
                run.state = PipelineRunState::Queued;
                run.finished_at = None;
                run.cancel_reason = None;
                self.active.insert(id.clone());
                self.mark_changed(id);
            }
            OperatorRequest::Pause { pipeline } => {
                self.cursor_mut(&pipeline).paused = true;
            }
            OperatorRequest::Resume { pipeline } => {
                // Ticks that passed while paused were declined on purpose, not missed.
                self.ticks.forget(&pipeline);
                let cursor = self.cursor_mut(&pipeline);
                cursor.paused = false;
                cursor.last_tick = Some(now);
            }
            OperatorRequest::CreateBackfill { id, spec } => {
                if let Err(e) = self.create_backfill(id, spec, false, now) {
                    tracing::warn!(error = %e, "backfill refused");
                }
            }
            OperatorRequest::CancelBackfill { id } => self.cancel_backfill(&id, now),
        }
    }
}

impl Engine {
    /// Cancels every active pipeline run (shutdown with `on_shutdown: cancel`).
    pub fn cancel_everything(&mut self, reason: CancelReason, now: DateTime<Utc>) {
        let active: Vec<_> = self.active.iter().cloned().collect();
        for id in active {
            self.cancel_pipeline_run(&id, reason, now);
        }
    }
}
