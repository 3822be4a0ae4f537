//! The verdict shared by the process tests that kill the daemon (crash test, fault soak): the
//! daemon's final state against the emulator's own record. No attempt key has two dbt Cloud runs,
//! no failed run is resumed twice, every expected tick has its pipeline run, no step is missing,
//! every attempt records the outcome dbt Cloud reports, every step and pipeline run ends in the
//! state those outcomes imply. Also the daemon log's errors, and keeping the files of a failed run.

use super::process::{EmulatedRun, Workspace};
use baton::engine::state::{
    AttemptKey, AttemptKind, AttemptOutcome, PipelineRunId, PipelineRunState, State, StepState,
};
use baton::model::pipeline::{PipelineName, Step, StepName};
use chrono::{DateTime, Duration, Utc};
use std::collections::{BTreeMap, BTreeSet};

/// What the comparison counted and found wrong.
#[derive(Debug, Default)]
pub struct Checked {
    pub pipeline_runs: usize,
    pub attempts: usize,
    pub dbt_runs: usize,
    /// dbt Cloud runs whose trigger took effect and still answered 502.
    pub answered_502: usize,
    /// Attempts that ended by baton's `timeout` (a confirmed cancel).
    pub timed_out: usize,
    pub duplicates: Vec<String>,
    pub lost: Vec<String>,
    pub wrong: Vec<String>,
}

impl Checked {
    pub fn is_clean(&self) -> bool {
        self.duplicates.is_empty() && self.lost.is_empty() && self.wrong.is_empty()
    }

    /// The first problems of each kind, one a line.
    pub fn print_problems(&self) {
        for (what, list) in [
            ("duplicate", &self.duplicates),
            ("lost", &self.lost),
            ("wrong", &self.wrong),
        ] {
            for line in list.iter().take(20) {
                eprintln!("  {what}: {line}");
            }
        }
    }
}

/// The pipeline runs owed for `pipelines` ticking every minute from `first` to `last` inclusive.
pub fn minute_ticks(
    pipelines: &[&str],
    first: DateTime<Utc>,
    last: DateTime<Utc>,
) -> BTreeSet<PipelineRunId> {
    ticks(pipelines, first, last, Duration::minutes(1))
}

/// The pipeline runs owed for `pipelines` ticking every `every` from `first` to `last` inclusive.
pub fn ticks(
    pipelines: &[&str],
    first: DateTime<Utc>,
    last: DateTime<Utc>,
    every: Duration,
) -> BTreeSet<PipelineRunId> {
    let mut expected = BTreeSet::new();
    for pipeline in pipelines {
        let mut tick = first;
        while tick <= last {
            expected.insert(PipelineRunId::new(&PipelineName((*pipeline).into()), tick));
            tick += every;
        }
    }
    expected
}

/// Compares the daemon's final state with the emulator's record; `expected` are the pipeline runs
/// the schedules owe (no other may exist).
pub fn check(state: &State, runs: &[EmulatedRun], expected: &BTreeSet<PipelineRunId>) -> Checked {
    let mut report = Checked {
        dbt_runs: runs.len(),
        answered_502: runs.iter().filter(|r| r.answered_status == 502).count(),
        pipeline_runs: state.runs.len(),
        ..Checked::default()
    };
    check_keys(runs, &mut report);
    for id in expected {
        if !state.runs.contains_key(id) {
            report
                .lost
                .push(format!("{id}: the tick has no pipeline run"));
        }
    }
    let by_id: BTreeMap<i64, &EmulatedRun> = runs.iter().map(|r| (r.id, r)).collect();
    let mut adopted_ids = BTreeSet::new();
    for run in state.runs.values() {
        if !expected.contains(&run.id) {
            report
                .wrong
                .push(format!("{}: a pipeline run outside the window", run.id));
        }
        if !run.state.is_terminal() {
            report
                .lost
                .push(format!("{}: never finished ({:?})", run.id, run.state));
            continue;
        }
        let mut implied: BTreeMap<StepName, StepState> = BTreeMap::new();
        for step in &run.definition.steps {
            let Some(step_run) = run.steps.get(&step.name) else {
                report
                    .lost
                    .push(format!("{} {}: the step is missing", run.id, step.name));
                continue;
            };
            let mut last = None;
            for (index, attempt) in step_run.attempts.iter().enumerate() {
                report.attempts += 1;
                let at = format!("{} {} #{}", run.id, step.name, attempt.number);
                if attempt.number != index as u32 + 1
                    || attempt.key != AttemptKey::derive(&run.id, &step.name, attempt.number)
                {
                    report
                        .wrong
                        .push(format!("{at}: numbered or keyed wrongly"));
                }
                let Some(dbt) = attempt.run_id.and_then(|id| by_id.get(&id.0)) else {
                    report.lost.push(format!(
                        "{at}: no dbt Cloud run ({:?}, {:?})",
                        attempt.outcome, attempt.message
                    ));
                    continue;
                };
                adopted_ids.insert(dbt.id);
                match attempt.kind {
                    AttemptKind::Trigger if dbt.key().as_deref() != Some(&attempt.key.0) => {
                        report.wrong.push(format!(
                            "{at}: adopted run {} whose cause is {:?}",
                            dbt.id, dbt.cause
                        ));
                    }
                    AttemptKind::RerunFrom { failed_run }
                        if dbt.key().as_deref() != Some(&attempt.key.0)
                            && dbt.resumed_from.is_some_and(|r| r != failed_run.0) =>
                    {
                        report.wrong.push(format!(
                            "{at}: a rerun of {failed_run} adopted run {} which resumes {:?}",
                            dbt.id, dbt.resumed_from
                        ));
                    }
                    _ => {}
                }
                let Some(outcome) = outcome_of(dbt, step) else {
                    report.wrong.push(format!(
                        "{at}: dbt Cloud run {} ended {}",
                        dbt.id, dbt.status
                    ));
                    continue;
                };
                if outcome == AttemptOutcome::TimedOut {
                    report.timed_out += 1;
                }
                if attempt.outcome != Some(outcome) {
                    report.wrong.push(format!(
                        "{at}: dbt Cloud says {outcome:?}, baton recorded {:?}",
                        attempt.outcome
                    ));
                }
                if last == Some(AttemptOutcome::Success) {
                    report
                        .wrong
                        .push(format!("{at}: an attempt after a success"));
                }
                last = Some(outcome);
            }
            let upstream_failed = step.depends_on.iter().any(|u| {
                matches!(
                    implied.get(u),
                    Some(StepState::Failed | StepState::UpstreamFailed)
                )
            });
            let retryable = |outcome: AttemptOutcome| match outcome {
                AttemptOutcome::Error => true,
                AttemptOutcome::TimedOut => step.limits.retry.on_timeout,
                _ => false,
            };
            let expected_state = match last {
                None if upstream_failed => StepState::UpstreamFailed,
                None => {
                    report
                        .lost
                        .push(format!("{} {}: never attempted", run.id, step.name));
                    StepState::Pending
                }
                Some(AttemptOutcome::Success) => StepState::Succeeded,
                Some(outcome)
                    if !retryable(outcome)
                        || step_run.attempts.len() as u32 >= step.limits.retry.attempts =>
                {
                    StepState::Failed
                }
                Some(_) => {
                    report.lost.push(format!(
                        "{} {}: a retry is missing after attempt {}",
                        run.id,
                        step.name,
                        step_run.attempts.len()
                    ));
                    StepState::Failed
                }
            };
            if step_run.state != expected_state {
                report.wrong.push(format!(
                    "{} {}: ended {:?}, the outcomes imply {expected_state:?}",
                    run.id, step.name, step_run.state
                ));
            }
            implied.insert(step.name.clone(), expected_state);
        }
        let all_ok = implied.values().all(|s| *s == StepState::Succeeded);
        let expected_run = if all_ok {
            PipelineRunState::Succeeded
        } else {
            PipelineRunState::Failed
        };
        if run.state != expected_run {
            report.wrong.push(format!(
                "{}: ended {:?}, its steps imply {expected_run:?}",
                run.id, run.state
            ));
        }
    }
    for run in runs {
        if !adopted_ids.contains(&run.id)
            && !report
                .duplicates
                .iter()
                .any(|d| d.contains(&run.id.to_string()))
        {
            report.lost.push(format!(
                "dbt Cloud run {} ({:?}) belongs to no attempt",
                run.id, run.cause
            ));
        }
    }
    report
}

/// What the attempt must have recorded for a finished dbt Cloud run: its status, and a cancel is
/// baton's `timeout` (nothing else cancels in these tests) so only a step with one may have it.
fn outcome_of(dbt: &EmulatedRun, step: &Step) -> Option<AttemptOutcome> {
    match dbt.status {
        10 => Some(AttemptOutcome::Success),
        20 => Some(AttemptOutcome::Error),
        30 if step.limits.timeout.is_some() => Some(AttemptOutcome::TimedOut),
        _ => None,
    }
}

/// No attempt key has two dbt Cloud runs, no failed run was resumed twice, every run carries a key.
fn check_keys(runs: &[EmulatedRun], report: &mut Checked) {
    let mut by_key: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut by_resumed: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for run in runs {
        // A run resumed from failure keeps the cause (and key) of the run it resumes: it is
        // counted by the run it resumes instead.
        match (run.resumed_from, run.key()) {
            (Some(failed), _) => by_resumed.entry(failed).or_default().push(run.id),
            (None, Some(key)) => by_key.entry(key).or_default().push(run.id),
            (None, None) if run.via_rerun => {}
            (None, None) => report
                .wrong
                .push(format!("run {} carries no key: {:?}", run.id, run.cause)),
        }
    }
    for (key, ids) in &by_key {
        if ids.len() > 1 {
            let detail: Vec<String> = ids
                .iter()
                .filter_map(|id| runs.iter().find(|r| r.id == *id))
                .map(|r| {
                    format!(
                        "{} (job {}, rerun {}, resumes {:?}, answered {})",
                        r.id, r.job_id, r.via_rerun, r.resumed_from, r.answered_status
                    )
                })
                .collect();
            report.duplicates.push(format!(
                "key {key} has dbt Cloud runs {}",
                detail.join(", ")
            ));
        }
    }
    for (failed, ids) in &by_resumed {
        if ids.len() > 1 {
            report
                .duplicates
                .push(format!("failed run {failed} was resumed by {ids:?}"));
        }
    }
}

/// The first `limit` ERROR lines of the daemon's log.
pub fn error_lines(workspace: &Workspace, limit: usize) -> Vec<String> {
    workspace
        .log_text()
        .lines()
        .filter(|l| l.contains("\"level\":\"ERROR\""))
        .take(limit)
        .map(str::to_string)
        .collect()
}

/// Keeps both processes' files (printing where) so a failure can be looked at.
pub fn keep_files(test: &str, workspace: Workspace, scratch: tempfile::TempDir) {
    eprintln!(
        "{test}: keeping the daemon's files in {} and the emulator's in {}",
        workspace.dir.path().display(),
        scratch.path().display()
    );
    std::mem::forget(workspace);
    std::mem::forget(scratch);
}

/// The last `n` lines of a log.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
