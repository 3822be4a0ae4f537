//! A made-up but plausible run history (a wide DAG, daily runs, varied durations, a retried step,
//! a failure now and then) for the pages' unit tests and the `pages` benchmark, which need many
//! steps and runs without running them. Deterministic: the same sizes give the same history.

use crate::dbt_cloud::wire::{RunStatus, TriggerRequest};
use crate::engine::state::{
    Attempt, AttemptKey, AttemptKind, AttemptOutcome, AttemptPhase, PipelineRun, PipelineRunId,
    PipelineRunState, RunOrigin, StepRun, StepState,
};
use crate::ids::RunId;
use crate::model::pipeline::Pipeline;
use chrono::{DateTime, Duration, Utc};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;

/// A pipeline named `name` of `steps` steps: step `i` after step `i - 1`, and after `i / 2` too,
/// so the DAG has both chains and fan-ins.
pub fn pipeline(name: &str, steps: usize) -> anyhow::Result<Pipeline> {
    let mut yaml = format!(
        "name: {name}\nschedule: {{ cron: \"0 2 * * *\", timezone: Europe/Amsterdam }}\nsteps:\n"
    );
    for i in 0..steps {
        let _ = write!(yaml, "  s{i:02}: {{ job_id: {}", 100 + i);
        match i {
            0 => {}
            1 => yaml.push_str(", depends_on: [s00]"),
            _ if (i / 2) != i - 1 => {
                let _ = write!(yaml, ", depends_on: [s{:02}, s{:02}]", i - 1, i / 2);
            }
            _ => {
                let _ = write!(yaml, ", depends_on: [s{:02}]", i - 1);
            }
        }
        yaml.push_str(" }\n");
    }
    crate::config::load_pipeline_str(&format!("{name}.yaml"), &yaml)
        .map_err(|d| anyhow::anyhow!("{d}"))
}

fn attempt(
    run: &PipelineRunId,
    step: &crate::model::pipeline::Step,
    number: u32,
    created: DateTime<Utc>,
    seconds: i64,
    ok: bool,
    dbt_run: i64,
) -> Attempt {
    let running = created + Duration::seconds(4);
    let finished = running + Duration::seconds(seconds);
    Attempt {
        number,
        key: AttemptKey::derive(run, &step.name, number),
        job_id: step.job_id,
        kind: AttemptKind::Trigger,
        phase: AttemptPhase::Finished,
        request: TriggerRequest::default(),
        run_id: Some(RunId(dbt_run)),
        href: Some(format!(
            "https://cloud.getdbt.com/deploy/1/projects/1/runs/{dbt_run}/"
        )),
        status: Some(if ok {
            RunStatus::Success
        } else {
            RunStatus::Error
        }),
        history: Vec::new(),
        blocked_by: Vec::new(),
        created_at: created,
        sends: 1,
        resend_at: None,
        reconcile_at: None,
        accepted_at: Some(created + Duration::seconds(1)),
        queued_since: Some(created + Duration::seconds(1)),
        running_since: Some(running),
        finished_at: Some(finished),
        cancel: None,
        outcome: Some(if ok {
            AttemptOutcome::Success
        } else {
            AttemptOutcome::Error
        }),
        message: (!ok).then(|| "Database Error in model <orders>".to_string()),
        details: None,
        // As the engine keeps it: a success's duration by dbt Cloud's timestamps.
        run_duration_ms: ok
            .then(|| u64::try_from((finished - created).num_milliseconds()).ok())
            .flatten(),
    }
}

/// `count` daily runs of `def`, the first at `first`, newest first (as `merge_runs` orders them).
/// Every seventh run retries one step; every eleventh fails at one step.
pub fn runs(def: &Arc<Pipeline>, count: usize, first: DateTime<Utc>) -> Vec<PipelineRun> {
    let mut out = Vec::with_capacity(count);
    let mut dbt_run = 70_000_000_i64;
    for r in 0..count {
        let logical = first + Duration::days(r as i64);
        let id = PipelineRunId::new(&def.name, logical);
        let start = logical + Duration::minutes(1);
        let mut ends: BTreeMap<&str, DateTime<Utc>> = BTreeMap::new();
        let mut steps = BTreeMap::new();
        let mut failed = false;
        for (j, step) in def.steps.iter().enumerate() {
            let upstream_failed = step
                .depends_on
                .iter()
                .any(|u| !ends.contains_key(u.0.as_str()));
            if failed && upstream_failed {
                steps.insert(
                    step.name.clone(),
                    StepRun {
                        state: StepState::UpstreamFailed,
                        attempts: Vec::new(),
                    },
                );
                continue;
            }
            let ready = step
                .depends_on
                .iter()
                .filter_map(|u| ends.get(u.0.as_str()))
                .max()
                .copied()
                .unwrap_or(start);
            let seconds = 20 + ((r * 37 + j * 53) % 90) as i64 + (r as i64 / 3);
            let mut attempts = Vec::new();
            let retried = r % 7 == 3 && j == def.steps.len() / 2;
            let fails = r % 11 == 5 && j == def.steps.len() / 3;
            let mut created = ready + Duration::seconds(2);
            if retried {
                dbt_run += 1;
                let a = attempt(&id, step, 1, created, seconds / 2, false, dbt_run);
                created = a.finished_at.unwrap_or(created) + Duration::seconds(30);
                attempts.push(a);
            }
            dbt_run += 1;
            let number = attempts.len() as u32 + 1;
            let a = attempt(&id, step, number, created, seconds, !fails, dbt_run);
            let end = a.finished_at.unwrap_or(created);
            attempts.push(a);
            let state = if fails {
                failed = true;
                StepState::Failed
            } else {
                ends.insert(step.name.0.as_str(), end);
                StepState::Succeeded
            };
            steps.insert(step.name.clone(), StepRun { state, attempts });
        }
        let finished = steps
            .values()
            .filter_map(|s: &StepRun| s.current().and_then(|a| a.finished_at))
            .max()
            .unwrap_or(start);
        out.push(PipelineRun {
            id,
            definition: def.clone(),
            logical_date: logical,
            data_interval_start: logical - Duration::days(1),
            origin: RunOrigin::Schedule,
            state: if failed {
                PipelineRunState::Failed
            } else {
                PipelineRunState::Succeeded
            },
            created_at: logical,
            started_at: Some(start),
            finished_at: Some(finished),
            cancel_reason: None,
            steps,
            deadline: None,
            late_since: None,
        });
    }
    out.reverse();
    out
}
