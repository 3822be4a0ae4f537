//! The simulated account: runs and their lifecycle (1 → 2 → 3 → 10/20/30), one run per job at a
//! time, the run-slot limit, timeouts, cancels, reruns from failure. Time only moves through
//! `advance(now)`, which replays every transition due up to `now` at its own instant, so the state
//! is the same whether the clock is read often or rarely.

use super::lifecycle::Schedule;
pub use super::run::{
    invoke_step_name, Ending, LifecycleEvent, LifecycleKind, RunState, SETUP_STEPS,
};
use super::scenario::{DurationSpec, JobSpec, Outcome, Scenario};
use crate::dbt_cloud::wire::{RunStatus, TriggerRequest};
use crate::ids::{JobId, RunId, TriggerId};
use chrono::{DateTime, Duration, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;

/// Distance between consecutive run ids (room for each run's step ids); a trigger id is its run id + 3.
const RUN_ID_STRIDE: i64 = 100;
/// Step ids live in their own range so that they never equal a run or trigger id.
const STEP_ID_OFFSET: i64 = 50_000_000_000;
/// Timeouts beyond ten years are treated as ten years (time arithmetic stays in range).
const MAX_TIMEOUT_SECONDS: i64 = 10 * 366 * 86_400;
/// The `status_message` of a cancelled run.
pub const CANCELLED_MESSAGE: &str = "Cancelled by user.";

/// Why an operation on the world was refused; routes turn these into API errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorldError {
    #[error("unknown job")]
    UnknownJob,
    #[error("unknown run")]
    UnknownRun,
    #[error("run cannot be retried: {0}")]
    NotRetryable(&'static str),
}

/// The whole simulated account.
#[derive(Debug)]
pub struct World {
    pub scenario: Scenario,
    pub runs: BTreeMap<RunId, RunState>,
    /// What happens next, and to which run.
    pub(super) schedule: Schedule,
    /// How many runs each job has had (for `fail_first`).
    runs_per_job: BTreeMap<JobId, usize>,
    pub outbox: Vec<LifecycleEvent>,
    /// When the emulator started: the jobs' `created_at`.
    pub epoch: DateTime<Utc>,
    next_run_id: i64,
    rng: StdRng,
    /// The instant up to which the simulation has run.
    pub(super) sim_time: DateTime<Utc>,
}

impl World {
    pub fn new(scenario: Scenario, now: DateTime<Utc>) -> Self {
        let rng = StdRng::seed_from_u64(scenario.seed);
        Self {
            next_run_id: scenario.first_run_id,
            scenario,
            runs: BTreeMap::new(),
            schedule: Schedule::default(),
            runs_per_job: BTreeMap::new(),
            outbox: Vec::new(),
            epoch: now,
            rng,
            sim_time: now,
        }
    }

    pub fn job(&self, id: JobId) -> Option<&JobSpec> {
        self.scenario.job(id)
    }

    /// Replaces how a job's later runs end.
    pub fn set_outcome(&mut self, job: JobId, outcome: Outcome) -> Result<(), WorldError> {
        self.job_mut(job)?.outcome = outcome;
        Ok(())
    }

    fn job_mut(&mut self, job: JobId) -> Result<&mut super::scenario::JobSpec, WorldError> {
        self.scenario
            .jobs
            .iter_mut()
            .find(|j| j.id == job)
            .ok_or(WorldError::UnknownJob)
    }

    /// Gives the job a new id, as a job deleted and created again (by Terraform, say) gets one.
    pub fn recreate_job(&mut self, job: JobId, new_id: JobId) -> Result<(), WorldError> {
        self.job_mut(job)?.id = new_id;
        Ok(())
    }

    /// The newest run of a job (highest id), whatever its status.
    pub fn latest_run_of(&self, job: JobId) -> Option<&RunState> {
        self.runs.values().rev().find(|r| r.job_id == job)
    }

    /// Creates a run for `job` as `jobs/{id}/run/` does: status 1, waiting its turn.
    pub fn trigger(
        &mut self,
        job: JobId,
        request: TriggerRequest,
        now: DateTime<Utc>,
    ) -> Result<RunId, WorldError> {
        self.advance(now);
        let spec = self.job(job).ok_or(WorldError::UnknownJob)?.clone();
        let mut steps: Vec<String> = SETUP_STEPS.iter().map(|s| s.to_string()).collect();
        let commands = request
            .steps_override
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| spec.execute_steps.clone());
        steps.extend(commands.iter().map(|c| invoke_step_name(c)));
        let fails_at = self
            .draw_failure(&spec)
            .then(|| spec.fail_at_step.unwrap_or(steps.len()).min(steps.len()));
        let id = self.create_run(&spec, request, steps, fails_at, now);
        Ok(id)
    }

    /// `jobs/{id}/rerun/`: resumes the job's latest run from its failed step when that run is
    /// status 20; otherwise a normal full run.
    pub fn rerun(
        &mut self,
        job: JobId,
        request: Option<TriggerRequest>,
        now: DateTime<Utc>,
    ) -> Result<RunId, WorldError> {
        self.advance(now);
        self.job(job).ok_or(WorldError::UnknownJob)?;
        let latest = self.latest_run_of(job).map(|r| (r.id, r.status));
        let id = match latest {
            Some((failed, RunStatus::Error)) => self.resume_from_failure(failed, request, now)?,
            _ => {
                let request = request.unwrap_or_else(|| TriggerRequest {
                    cause: "Triggered via API".into(),
                    ..TriggerRequest::default()
                });
                self.trigger(job, request, now)?
            }
        };
        if let Some(run) = self.runs.get_mut(&id) {
            run.via_rerun = true;
        }
        Ok(id)
    }

    /// `runs/{id}/retry/`: resumes this failed run, which must be its job's latest.
    pub fn retry_run(&mut self, run: RunId, now: DateTime<Utc>) -> Result<RunId, WorldError> {
        self.advance(now);
        let state = self.runs.get(&run).ok_or(WorldError::UnknownRun)?;
        if let Some(reason) = self.retry_not_supported_reason(state) {
            return Err(WorldError::NotRetryable(reason));
        }
        let id = self.resume_from_failure(run, None, now)?;
        if let Some(run) = self.runs.get_mut(&id) {
            run.via_rerun = true;
        }
        Ok(id)
    }

    fn resume_from_failure(
        &mut self,
        failed: RunId,
        request: Option<TriggerRequest>,
        now: DateTime<Utc>,
    ) -> Result<RunId, WorldError> {
        let old = self
            .runs
            .get(&failed)
            .ok_or(WorldError::UnknownRun)?
            .clone();
        let spec = self.job(old.job_id).ok_or(WorldError::UnknownJob)?.clone();
        let failed_step = match old.ending {
            Some(Ending::Error { step }) => step,
            _ => old.steps.len(),
        };
        let setup = SETUP_STEPS.len();
        // Commands before the failed one succeeded and are not run again.
        let skip = failed_step.saturating_sub(setup + 1);
        let mut steps: Vec<String> = SETUP_STEPS.iter().map(|s| s.to_string()).collect();
        steps.extend(old.steps.iter().skip(setup + skip).cloned());
        let skipped: Vec<String> = old.steps.iter().skip(setup).take(skip).cloned().collect();
        let fails_at = self.draw_failure(&spec).then(|| {
            let wanted = spec.fail_at_step.unwrap_or(old.steps.len());
            let mapped = if wanted <= setup {
                wanted
            } else {
                wanted.saturating_sub(skip).max(setup + 1)
            };
            mapped.min(steps.len())
        });
        let mut request = request.unwrap_or_else(|| old.request.clone());
        if request.cause.is_empty() {
            request.cause = format!("Rerun from failure of run {failed}");
        }
        let id = self.create_run(&spec, request, steps, fails_at, now);
        if let Some(run) = self.runs.get_mut(&id) {
            run.resumes = Some(failed);
            run.skipped_steps = skipped;
        }
        Ok(id)
    }

    fn draw_failure(&mut self, spec: &JobSpec) -> bool {
        match spec.outcome {
            Outcome::Success => false,
            Outcome::Error => true,
            Outcome::Flaky => self.rng.gen_bool(spec.failure_probability),
            Outcome::FailFirst => {
                let earlier = self.runs_per_job.get(&spec.id).copied().unwrap_or(0);
                earlier < spec.fail_first as usize
            }
        }
    }

    fn create_run(
        &mut self,
        spec: &JobSpec,
        request: TriggerRequest,
        steps: Vec<String>,
        fails_at: Option<usize>,
        now: DateTime<Utc>,
    ) -> RunId {
        let id = RunId(self.next_run_id);
        self.next_run_id += RUN_ID_STRIDE;
        let duration = spec.duration.unwrap_or(self.scenario.timing.duration);
        let run_time = match duration {
            DurationSpec::Fixed(span) => span.chrono(),
            DurationSpec::Range { min, max } => {
                let (lo, hi) = (min.0.as_millis() as i64, max.0.as_millis() as i64);
                Duration::milliseconds(self.rng.gen_range(lo..=hi))
            }
        };
        let fingerprint: String = (0..40)
            .map(|_| char::from_digit(self.rng.gen_range(0..16), 16).unwrap_or('0'))
            .collect();
        let planned_git_sha = request
            .git_sha
            .clone()
            .unwrap_or_else(|| fingerprint.clone());
        let timeout_seconds = request
            .timeout_seconds_override
            .filter(|t| *t > 0)
            .unwrap_or(spec.timeout_seconds)
            .clamp(0, MAX_TIMEOUT_SECONDS);
        let queue_delay = spec
            .queue_delay
            .unwrap_or(self.scenario.timing.queue_delay)
            .chrono();
        let run = RunState {
            id,
            job_id: spec.id,
            trigger_id: TriggerId(id.0 + 3),
            request,
            created_at: now,
            updated_at: now,
            status: RunStatus::Queued,
            eligible_since: None,
            dequeued_at: None,
            started_at: None,
            finished_at: None,
            status_message: None,
            ending: None,
            steps,
            skipped_steps: Vec::new(),
            step_id_base: id.0 + STEP_ID_OFFSET,
            run_time,
            fails_at,
            timeout_seconds,
            queue_delay,
            cancel_requested_at: None,
            fingerprint,
            planned_git_sha,
            git_sha: None,
            git_branch: None,
            via_rerun: false,
            resumes: None,
            answered_status: 200,
        };
        self.schedule.admit(&run);
        self.runs.insert(id, run);
        *self.runs_per_job.entry(spec.id).or_default() += 1;
        self.assign_turns(now);
        id
    }

    /// `runs/{id}/cancel/`: a run not yet running ends at once; a running one ends after the
    /// scenario's `cancel_delay`; a finished one is left as it is.
    pub fn cancel(&mut self, id: RunId, now: DateTime<Utc>) -> Result<(), WorldError> {
        self.advance(now);
        let run = self.runs.get_mut(&id).ok_or(WorldError::UnknownRun)?;
        if run.is_terminal() || run.cancel_requested_at.is_some() {
            return Ok(());
        }
        if run.status == RunStatus::Running {
            run.cancel_requested_at = Some(now);
            run.updated_at = now;
            self.replan(id);
        } else {
            run.dequeued_at = None;
            self.end_run(id, Ending::Cancelled, now, Some(CANCELLED_MESSAGE.into()));
        }
        self.advance(now);
        Ok(())
    }

    /// Runs of the same job, created earlier and not finished, that this queued run waits behind.
    pub fn blocked_by(&self, run: &RunState) -> Vec<RunId> {
        if run.status != RunStatus::Queued || run.eligible_since.is_some() {
            return Vec::new();
        }
        self.schedule.unfinished_before(run.job_id, run.id)
    }

    /// Why `runs/{id}/retry/` would refuse this run; `None` when it can be retried.
    pub fn retry_not_supported_reason(&self, run: &RunState) -> Option<&'static str> {
        if run.status != RunStatus::Error {
            return Some("RETRY_NOT_FAILED_RUN");
        }
        if self.latest_run_of(run.job_id).map(|r| r.id) != Some(run.id) {
            return Some("RETRY_NOT_LATEST_RUN");
        }
        None
    }
}

#[cfg(test)]
mod tests;
