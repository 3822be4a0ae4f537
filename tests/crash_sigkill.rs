//! The crash test: the real `baton run` against `baton emulator`, separate processes on one fast
//! time line. The daemon is SIGKILLed at random moments (seeded, printed) and restarted, hundreds of
//! times, while four pipelines tick every minute for one hour of scenario time (fan-in DAG, a chain,
//! a flaky job with retries, a flaky job retried through rerun-from-failure) and the emulator answers
//! slowly enough that kills land between a trigger POST and its answer. One cycle in twenty stops
//! cleanly instead, one in twenty is killed in the middle of its clean stop. Then the daemon runs to
//! the end and the emulator's own record is checked: no attempt key has two dbt Cloud runs, no
//! failed run was resumed twice, every tick of the hour has its pipeline run, no step is missing,
//! every pipeline run ends in the state the emulator's outcomes imply. The second variant turns on
//! the emulator's "queued but answered 502" fault for a quarter of the triggers, plus 5% server
//! errors and 3% connections dropped after the request took effect. On a failure the files of both
//! processes are kept and their paths printed.
//!
//! `BATON_CRASH_KILLS` (default 200) and `BATON_CRASH_SEED` (default: drawn and printed) tune it.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

mod support_process;

use baton::engine::state::{
    AttemptKey, AttemptKind, AttemptOutcome, PipelineRunId, PipelineRunState, State, StepState,
};
use baton::model::pipeline::{PipelineName, StepName};
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use support_process::{t, EmulatedRun, EmulatorProcess, TimeLine, Workspace};

/// Scenario seconds per real second: one cron minute per real second.
const SPEED: f64 = 60.0;
/// The hour in which every pipeline ticks each minute (`* 0 * * *`).
const WINDOW_START: &str = "2026-01-01T00:00:00Z";
const TICKS_PER_PIPELINE: u32 = 60;
const PIPELINES: [&str; 4] = ["fanin", "chain", "flaky", "rerun"];

fn scenario(seed: u64, faults: &str) -> String {
    format!(
        r#"
account_id: 70403103922125
token: crash-test-token
seed: {seed}
timing: {{ queue_delay: 1s, start_delay: 1s, cancel_delay: 1s }}
jobs:
  - {{ id: 11, name: fanin_a, duration: {{ min: 2s, max: 6s }} }}
  - {{ id: 12, name: fanin_b, duration: {{ min: 2s, max: 6s }} }}
  - {{ id: 13, name: fanin_c, duration: {{ min: 2s, max: 6s }} }}
  - {{ id: 14, name: fanin_d, duration: {{ min: 2s, max: 6s }} }}
  - {{ id: 21, name: chain_x, duration: {{ min: 2s, max: 6s }} }}
  - {{ id: 22, name: chain_y, duration: {{ min: 2s, max: 6s }} }}
  - {{ id: 31, name: flaky, outcome: flaky, failure_probability: 0.4, duration: {{ min: 1s, max: 4s }} }}
  - {{ id: 32, name: after_flaky, duration: {{ min: 1s, max: 4s }} }}
  - {{ id: 41, name: rerun_me, outcome: flaky, failure_probability: 0.4, execute_steps: ["dbt seed", "dbt run", "dbt test"], duration: {{ min: 1s, max: 4s }} }}
faults: {faults}
"#
    )
}

const HEAD: &str = r#"schedule: { cron: "* 0 * * *", timezone: UTC, catchup: all }
concurrency: queue
"#;

fn pipelines() -> Vec<(&'static str, String)> {
    vec![
        (
            "fanin.yaml",
            format!(
                "name: fanin\n{HEAD}steps:\n  a: {{ job_id: 11 }}\n  b: {{ job_id: 12, depends_on: [a] }}\n  \
                 c: {{ job_id: 13, depends_on: [a] }}\n  d: {{ job_id: 14, depends_on: [b, c] }}\n"
            ),
        ),
        (
            "chain.yaml",
            format!(
                "name: chain\n{HEAD}steps:\n  x: {{ job_id: 21 }}\n  y: {{ job_id: 22, depends_on: [x] }}\n"
            ),
        ),
        (
            "flaky.yaml",
            format!(
                "name: flaky\n{HEAD}steps:\n  f:\n    job_id: 31\n    retry: {{ attempts: 3, backoff: 3s }}\n  \
                 g: {{ job_id: 32, depends_on: [f] }}\n"
            ),
        ),
        (
            "rerun.yaml",
            format!(
                "name: rerun\n{HEAD}steps:\n  r:\n    job_id: 41\n    retry: {{ attempts: 3, backoff: 3s, from_failure: true }}\n"
            ),
        ),
    ]
}

const DAEMON_CONFIG: &str = "poll_interval: 5s\ncatchup_max: 1000\nmax_in_flight: 50\n";

#[derive(Debug, Default)]
struct Report {
    kills: u32,
    clean_restarts: u32,
    pipeline_runs: usize,
    attempts: usize,
    dbt_runs: usize,
    answered_502: usize,
    adopted: usize,
    duplicates: Vec<String>,
    lost: Vec<String>,
    wrong: Vec<String>,
}

impl Report {
    fn print(&self, variant: &str, seed: u64) {
        eprintln!(
            "crash test [{variant}] seed {seed}: kills {}, clean restarts {}, pipeline runs {}, \
             attempts {}, dbt Cloud runs (triggers) {}, answered 502 {}, adopted by key {}, \
             duplicates {}, lost {}, wrong {}",
            self.kills,
            self.clean_restarts,
            self.pipeline_runs,
            self.attempts,
            self.dbt_runs,
            self.answered_502,
            self.adopted,
            self.duplicates.len(),
            self.lost.len(),
            self.wrong.len()
        );
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

fn seed() -> u64 {
    std::env::var("BATON_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen())
}

fn kills_wanted() -> u32 {
    std::env::var("BATON_CRASH_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200)
}

fn crash_test(variant: &str, faults: &str) {
    let seed = seed();
    eprintln!("crash test [{variant}]: seed {seed} (rerun with BATON_CRASH_SEED={seed})");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let scenario_path = scratch.path().join("crash.scenario.yaml");
    std::fs::write(&scenario_path, scenario(seed, faults)).unwrap();
    let window = t(WINDOW_START);
    let time = TimeLine::starting_now(window - chrono::Duration::minutes(2), SPEED);
    let emulator = EmulatorProcess::start(&scenario_path, &time, &scratch.path().join("emu.log"));
    let workspace = Workspace::new(&emulator, DAEMON_CONFIG);
    for (file, yaml) in pipelines() {
        workspace.write_pipeline(file, &yaml);
    }
    // Looked at before the window, so every tick of it is owed whenever the first daemon starts.
    for pipeline in PIPELINES {
        workspace.seed_cursor(pipeline, window - chrono::Duration::minutes(1));
    }
    let mut report = Report::default();

    // The first daemon records the schedule cursors undisturbed.
    let first = workspace.start_daemon(&time);
    time.sleep_until(window - chrono::Duration::seconds(30));
    first.sigkill();
    report.kills += 1;

    let wanted = kills_wanted();
    while report.kills < wanted {
        let daemon = workspace.start_daemon(&time);
        let up = rng.gen_range(5..450);
        std::thread::sleep(std::time::Duration::from_millis(up));
        match rng.gen_range(0..20) {
            // Now and then a clean stop (once the process has had time to install its signal
            // handlers), and now and then a kill in the middle of one.
            0 if up >= 100 => {
                let (status, _) = daemon.sigterm(std::time::Duration::from_secs(20));
                assert!(
                    status.success(),
                    "the daemon exited with {status}; its log ends:\n{}",
                    tail(&workspace.log_text(), 20)
                );
                report.clean_restarts += 1;
            }
            1 => {
                daemon.signal("TERM");
                std::thread::sleep(std::time::Duration::from_millis(rng.gen_range(0..20)));
                daemon.sigkill();
                report.kills += 1;
            }
            _ => {
                daemon.sigkill();
                report.kills += 1;
            }
        }
    }
    eprintln!(
        "crash test [{variant}]: {} kills done at scenario time {}",
        report.kills,
        time.now()
    );

    // Let everything finish: no more ticks after the window; stop cleanly now and then to read
    // the state until every pipeline run has ended.
    let window_end = window + chrono::Duration::minutes(i64::from(TICKS_PER_PIPELINE));
    // Bounded: a run that has not ended by then is reported as never finished.
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(150);
    let state = loop {
        let daemon = workspace.start_daemon(&time);
        time.sleep_until(time.now().max(window_end) + chrono::Duration::minutes(1));
        let (status, _) = daemon.sigterm(std::time::Duration::from_secs(20));
        assert!(status.success(), "the daemon exited with {status}");
        report.clean_restarts += 1;
        let state = workspace.load_state();
        let finished = state.runs.values().all(|r| r.state.is_terminal());
        if finished && state.runs.len() >= PIPELINES.len() * TICKS_PER_PIPELINE as usize {
            break state;
        }
        if std::time::Instant::now() > give_up {
            break state;
        }
    };
    let runs = runtime.block_on(emulator.runs());
    report.adopted = workspace.count_events("trigger_adopted");
    check(&state, &runs, &mut report);
    report.print(variant, seed);
    let log = workspace.log_text();
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"level\":\"ERROR\""))
        .take(5)
        .collect();
    let clean = report.duplicates.is_empty()
        && report.lost.is_empty()
        && report.wrong.is_empty()
        && errors.is_empty();
    if !clean {
        eprintln!(
            "crash test [{variant}]: keeping the daemon's files in {} and the emulator's in {}",
            workspace.dir.path().display(),
            scratch.path().display()
        );
        std::mem::forget(workspace);
        std::mem::forget(scratch);
    }
    assert!(
        errors.is_empty(),
        "the daemon logged errors: {}",
        errors.join("\n")
    );
    assert!(
        clean,
        "the crash test found problems (seed {seed}); see above"
    );
    assert!(report.kills >= wanted);
    assert!(
        report.adopted > 0,
        "no trigger was adopted by its key: no kill landed between a trigger and its answer, so the \
         test did not exercise reconciliation"
    );
}

/// Compares the daemon's final state with the emulator's record.
fn check(state: &State, runs: &[EmulatedRun], report: &mut Report) {
    report.dbt_runs = runs.len();
    report.answered_502 = runs.iter().filter(|r| r.answered_status == 502).count();
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
    let by_id: BTreeMap<i64, &EmulatedRun> = runs.iter().map(|r| (r.id, r)).collect();
    let mut adopted_ids = BTreeSet::new();

    let window = t(WINDOW_START);
    let mut expected = BTreeSet::new();
    for pipeline in PIPELINES {
        for minute in 0..TICKS_PER_PIPELINE {
            let tick = window + chrono::Duration::minutes(i64::from(minute));
            expected.insert(PipelineRunId::new(&PipelineName(pipeline.into()), tick));
        }
    }
    for id in &expected {
        if !state.runs.contains_key(id) {
            report
                .lost
                .push(format!("{id}: the tick has no pipeline run"));
        }
    }
    report.pipeline_runs = state.runs.len();
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
                let outcome = match dbt.status {
                    10 => AttemptOutcome::Success,
                    20 => AttemptOutcome::Error,
                    other => {
                        report
                            .wrong
                            .push(format!("{at}: dbt Cloud run {} ended {other}", dbt.id));
                        continue;
                    }
                };
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
            let expected_state = match last {
                None if upstream_failed => StepState::UpstreamFailed,
                None => {
                    report
                        .lost
                        .push(format!("{} {}: never attempted", run.id, step.name));
                    StepState::Pending
                }
                Some(AttemptOutcome::Success) => StepState::Succeeded,
                Some(_) if step_run.attempts.len() as u32 >= step.retry.attempts => {
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
}

#[test]
fn sigkill_at_random_moments_loses_and_repeats_nothing() {
    crash_test("latency", "{ latency_ms: 30 }");
}

#[test]
fn sigkill_with_triggers_queued_but_answered_502_loses_and_repeats_nothing() {
    crash_test(
        "queued but answered 502",
        "{ latency_ms: 30, trigger_502_rate: 0.25, server_error_rate: 0.05, drop_connection_rate: 0.03 }",
    );
}

/// The last `n` lines of a log.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
