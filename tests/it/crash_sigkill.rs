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
//! The store is under retention pressure all along: a history of finished runs of an `expired`
//! pipeline is seeded to pass `history_retention` bit by bit through the kills, so nearly every
//! start deletes a batch and some kills land in those deletes. After every kill the test opens
//! the store and loads it (a store that does not open fails the test at once); at the end every
//! seeded run must be gone and SQLite's integrity check must say ok.
//!
//! `BATON_CRASH_KILLS` (default 200) and `BATON_CRASH_SEED` (default: drawn and printed) tune it.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

use crate::support::check::{check, error_lines, keep_files, minute_ticks, tail, Checked};
use crate::support::process::{EmulatorProcess, TimeLine, Workspace};
use crate::support::scenario::kill_test_pipelines;
use crate::support::slow_tests_enabled;
use crate::support::t;
use chrono::{DateTime, Utc};
use rand::{Rng, SeedableRng};

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
    kill_test_pipelines(HEAD)
}

const DAEMON_CONFIG: &str = "poll_interval: 5s\ncatchup_max: 1000\nmax_in_flight: 50\n";

#[derive(Debug, Default)]
struct Report {
    kills: u32,
    /// Kills that landed before the daemon said it had started.
    kills_during_startup: u32,
    /// Kills of a daemon that had deleted expired runs (its retention pass ran).
    kills_after_deletes: u32,
    /// Times the test opened and loaded the store after a kill.
    store_opens: u32,
    clean_restarts: u32,
    adopted: usize,
    checked: Checked,
}

impl Report {
    fn print(&self, variant: &str, seed: u64) {
        eprintln!(
            "crash test [{variant}] seed {seed}: kills {} (during start-up {}, of a daemon that \
             had deleted expired runs {}), store opened after a kill {}, clean restarts {}, \
             pipeline runs {}, attempts {}, dbt Cloud runs (triggers) {}, answered 502 {}, \
             adopted by key {}, duplicates {}, lost {}, wrong {}",
            self.kills,
            self.kills_during_startup,
            self.kills_after_deletes,
            self.store_opens,
            self.clean_restarts,
            self.checked.pipeline_runs,
            self.checked.attempts,
            self.checked.dbt_runs,
            self.checked.answered_502,
            self.adopted,
            self.checked.duplicates.len(),
            self.checked.lost.len(),
            self.checked.wrong.len()
        );
        self.checked.print_problems();
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
    let wanted = kills_wanted();
    let seeded = seed_expiring_history(&workspace, window, wanted);
    let mut report = Report::default();

    // The first daemon records the schedule cursors undisturbed.
    let first = workspace.start_daemon(&time);
    time.sleep_until(window - chrono::Duration::seconds(30));
    first.sigkill();
    report.kills += 1;

    let mut expired_left = seeded;
    while report.kills < wanted {
        let from = workspace.log_len();
        let daemon = workspace.start_daemon(&time);
        let up = rng.gen_range(5..450);
        std::thread::sleep(std::time::Duration::from_millis(up));
        match rng.gen_range(0..20) {
            // Now and then a clean stop (once the process has installed its signal handlers: on
            // a loaded machine 100 ms may not be enough), and now and then a kill in the middle
            // of one.
            0 if up >= 100 => {
                workspace.wait_for_signal_handlers(from);
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
        if !workspace.wait_for_log_after(from, "baton started", std::time::Duration::ZERO) {
            report.kills_during_startup += 1;
        }
        let left = expired_runs_left(&workspace, report.kills);
        report.store_opens += 1;
        if left < expired_left {
            report.kills_after_deletes += 1;
        }
        expired_left = left;
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
    let expected = minute_ticks(
        &PIPELINES,
        window,
        window + chrono::Duration::minutes(i64::from(TICKS_PER_PIPELINE) - 1),
    );
    let mut state = state;
    let expired_kept = state
        .runs
        .keys()
        .filter(|id| id.0.starts_with("expired@"))
        .count();
    state.runs.retain(|id, _| !id.0.starts_with("expired@"));
    report.checked = check(&state, &runs, &expected);
    report.print(variant, seed);
    let errors = error_lines(&workspace, 5);
    let integrity =
        baton::store::sqlite::integrity_check(&workspace.state_dir.join("baton.db")).unwrap();
    eprintln!("crash test [{variant}]: integrity check {integrity:?} (empty: ok)");
    let clean = report.checked.is_clean() && errors.is_empty() && integrity.is_empty();
    if !clean {
        keep_files(&format!("crash test [{variant}]"), workspace, scratch);
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
    assert_eq!(
        expired_kept, 0,
        "retention left {expired_kept} of {seeded} expired runs in the store"
    );
    assert!(
        report.kills_after_deletes > 0,
        "no kill came after a retention delete: the test did not exercise them"
    );
    assert!(integrity.is_empty(), "integrity check: {integrity:?}");
    assert!(
        report.adopted > 0,
        "no trigger was adopted by its key: no kill landed between a trigger and its answer, so the \
         test did not exercise reconciliation"
    );
}

/// Retention (the default 30 days) and the expired runs' spread, in scenario time. A kill cycle
/// takes about a quarter of a real second, 15 scenario seconds or more; the runs expire over 10
/// seconds a kill, so the last has expired while kills still restart daemons (each start prunes at
/// once; a pass that deleted everything due waits an hour).
const RETENTION_DAYS: i64 = 30;
const SCENARIO_SECONDS_PER_KILL: i64 = 10;
const EXPIRED_RUNS_PER_KILL: u32 = 50;

/// Writes finished, archived runs of the pipeline `expired` whose retention ends one by one from
/// just before the window on through the kills; returns how many.
fn seed_expiring_history(workspace: &Workspace, window: DateTime<Utc>, kills: u32) -> usize {
    use baton::engine::state::{PipelineRun, PipelineRunId, PipelineRunState, RunOrigin, Write};
    let definition = std::sync::Arc::new(
        baton::config::load_pipeline_str(
            "expired.yaml",
            "name: expired\nsteps:\n  s: { job_id: 11 }\n",
        )
        .unwrap(),
    );
    let count = kills * EXPIRED_RUNS_PER_KILL;
    let spread = chrono::Duration::seconds(i64::from(kills) * SCENARIO_SECONDS_PER_KILL);
    let first_expiry = window - chrono::Duration::minutes(1);
    let store = baton::store::Store::open(&workspace.state_dir).unwrap();
    let writes: Vec<Write> = (0..count)
        .map(|i| {
            let expires =
                first_expiry + spread * i32::try_from(i).unwrap() / i32::try_from(count).unwrap();
            let finished = expires - chrono::Duration::days(RETENTION_DAYS);
            let logical = finished - chrono::Duration::minutes(10)
                + chrono::Duration::milliseconds(i64::from(i));
            Write::Archive(Box::new(PipelineRun {
                id: PipelineRunId::new(&definition.name, logical),
                definition: definition.clone(),
                logical_date: logical,
                data_interval_start: logical,
                origin: RunOrigin::Schedule,
                state: PipelineRunState::Succeeded,
                created_at: logical,
                started_at: Some(logical),
                finished_at: Some(finished),
                cancel_reason: None,
                steps: Default::default(),
                deadline: None,
                late_since: None,
            }))
        })
        .collect();
    for chunk in writes.chunks(5000) {
        store.commit(chunk).unwrap();
    }
    count as usize
}

/// Opens and loads the store as the next daemon will (failing the test if it cannot); returns how
/// many expired runs it still holds.
fn expired_runs_left(workspace: &Workspace, kills: u32) -> usize {
    let opened = baton::store::Store::open(&workspace.state_dir).and_then(|store| store.load());
    match opened {
        Ok(state) => state
            .archived
            .keys()
            .chain(state.runs.keys().cloned())
            .filter(|id| id.0.starts_with("expired@"))
            .count(),
        Err(e) => panic!("the store did not open after kill {kills}: {e}"),
    }
}

#[test]
fn sigkill_at_random_moments_loses_and_repeats_nothing() {
    if !slow_tests_enabled("crash_sigkill::sigkill_at_random_moments_loses_and_repeats_nothing") {
        return;
    }
    crash_test("latency", "{ latency_ms: 30 }");
}

#[test]
fn sigkill_with_triggers_queued_but_answered_502_loses_and_repeats_nothing() {
    if !slow_tests_enabled(
        "crash_sigkill::sigkill_with_triggers_queued_but_answered_502_loses_and_repeats_nothing",
    ) {
        return;
    }
    crash_test(
        "queued but answered 502",
        "{ latency_ms: 30, trigger_502_rate: 0.25, server_error_rate: 0.05, drop_connection_rate: 0.03 }",
    );
}
