//! The fault soak: the real `baton run` against `baton emulator`, separate processes on one fast
//! time line, for a configurable period with every emulator fault on at once (added latency,
//! 500/502/503 with HTML bodies, 429 bursts with and without `Retry-After`, triggers that take
//! effect and answer 502, connections dropped after the request took effect) while the daemon is
//! SIGKILLed at random moments and now and then stopped cleanly. Five pipelines tick every two
//! scenario minutes for the whole period: a fan-in DAG, a chain, a flaky job with retries, a flaky job retried
//! through rerun-from-failure, and a slow job whose `timeout` forces a confirmed cancel. Then the
//! schedules are paused where they stand, the daemon runs to quiescence and the emulator's record
//! is checked (`process::check`): no duplicate trigger, no tick without its pipeline run, no
//! lost step, every final state the one the outcomes imply. The counts are printed as one block.
//!
//! `BATON_SOAK_SECS` (real seconds of faults and kills, default 60) and `BATON_SOAK_SEED` (default:
//! drawn and printed) tune it; `BATON_SOAK_FAULTS` replaces the scenario's `faults` (flow YAML).
//! Long form:
//! `BATON_SOAK_SECS=1800 cargo test --release --test soak -- --nocapture`.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

use crate::support::check::{check, error_lines, keep_files, tail, ticks, Checked};
use crate::support::process;
use crate::support::process::{EmulatorProcess, RequestCount, TimeLine, Workspace};
use crate::support::scenario::kill_test_pipelines;
use crate::support::slow_tests_enabled;
use crate::support::t;
use baton::engine::state::{AttemptKind, PipelineRunState};
use baton::model::pipeline::PipelineName;
use chrono::{DateTime, Utc};
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Scenario seconds per real second: one cron minute per real second.
const SPEED: f64 = 60.0;
const WINDOW_START: &str = "2026-01-01T00:00:00Z";
const PIPELINES: [&str; 5] = ["fanin", "chain", "flaky", "rerun", "timeout"];

/// Every fault at once. A 429 without `Retry-After` stops the whole account for dbt Cloud's
/// five-minute cooldown (5 real seconds here), so those stay rare enough for work to get done.
const FAULTS: &str = "{ latency_ms: 20, server_error_rate: 0.04, rate_limit_rate: 0.003, \
                      rate_limit_burst: 4, retry_after_seconds: 20, retry_after_missing_rate: 0.1, \
                      trigger_502_rate: 0.15, drop_connection_rate: 0.03 }";

fn scenario(seed: u64, faults: &str) -> String {
    format!(
        r#"
account_id: 70403103922125
token: soak-test-token
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
  - {{ id: 51, name: slow, duration: {{ min: 5s, max: 40s }} }}
  - {{ id: 52, name: after_slow, duration: {{ min: 1s, max: 3s }} }}
faults: {faults}
"#
    )
}

/// Every two scenario minutes: with `concurrency: queue` a pipeline's runs go one at a time, and a
/// run slowed by retries, reconciliations and cooldowns can take longer than one minute, so ticks
/// every minute would pile up a backlog that grows with the period.
const TICK_EVERY_MINUTES: i64 = 2;
const HEAD: &str = r#"schedule: { cron: "*/2 * * * *", timezone: UTC, catchup: all }
concurrency: queue
"#;

fn pipelines() -> Vec<(&'static str, String)> {
    let mut pipelines = kill_test_pipelines(HEAD);
    pipelines.push((
        "timeout.yaml",
        format!(
            "name: timeout\n{HEAD}steps:\n  s: {{ job_id: 51, timeout: 20s }}\n  \
                 u: {{ job_id: 52, depends_on: [s] }}\n"
        ),
    ));
    pipelines
}

const DAEMON_CONFIG: &str = "poll_interval: 5s\ncatchup_max: 100000\nmax_in_flight: 50\n";

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|s| s.parse().ok())
}

/// The counts the soak prints.
#[derive(Debug, Default)]
struct Report {
    seed: u64,
    real: Duration,
    simulated: chrono::Duration,
    kills: u32,
    clean_restarts: u32,
    /// Pipeline runs still open when the period ended, and how long they took to finish.
    open_at_end: usize,
    drain: Duration,
    adopted: usize,
    succeeded: usize,
    failed: usize,
    reruns: usize,
    requests: Vec<RequestCount>,
    injected: baton::emulator::faults::Injected,
    checked: Checked,
}

impl Report {
    fn requests_with(&self, wanted: impl Fn(u16) -> bool) -> u64 {
        self.requests
            .iter()
            .filter(|r| r.route != "control" && wanted(r.status))
            .map(|r| r.count)
            .sum()
    }

    fn print(&self) {
        let c = &self.checked;
        let by_status: BTreeMap<u16, u64> = self
            .requests
            .iter()
            .filter(|r| r.route != "control")
            .fold(BTreeMap::new(), |mut m, r| {
                *m.entry(r.status).or_default() += r.count;
                m
            });
        let statuses: Vec<String> = by_status.iter().map(|(s, n)| format!("{s}: {n}")).collect();
        eprintln!(
            "fault soak (seed {seed}, rerun with BATON_SOAK_SEED={seed})\n\
             \x20 period: real {real:.0?}, simulated {sim} (speed {SPEED})\n\
             \x20 daemon: SIGKILLs {kills}, clean restarts {clean}; {open} pipeline runs open at the \
             end, finished in {drain:.0?} real\n\
             \x20 pipeline runs: {runs} ({ok} succeeded, {failed} failed); attempts {attempts} \
             (rerun-from-failure {reruns}, timed out and cancelled {timed_out})\n\
             \x20 dbt Cloud runs (triggers): {dbt}; triggers adopted by key: {adopted}\n\
             \x20 API requests: {total} ({statuses})\n\
             \x20 faults: 5xx {five} (HTML 500/502/503 {server}), 429 {limited} ({without} without \
             Retry-After), 502 after effect {e502} ({answered} runs answered 502), dropped after \
             effect {dropped}\n\
             \x20 duplicates {dups}, lost {lost}, wrong {wrong}",
            seed = self.seed,
            real = self.real,
            sim = humantime::format_duration(Duration::from_secs(
                self.simulated.num_seconds().unsigned_abs()
            )),
            kills = self.kills,
            clean = self.clean_restarts,
            open = self.open_at_end,
            drain = self.drain,
            runs = c.pipeline_runs,
            ok = self.succeeded,
            failed = self.failed,
            attempts = c.attempts,
            reruns = self.reruns,
            timed_out = c.timed_out,
            dbt = c.dbt_runs,
            adopted = self.adopted,
            total = self.requests_with(|_| true),
            statuses = statuses.join(", "),
            five = self.requests_with(|s| s >= 500),
            server = self.injected.server_errors,
            limited = self.requests_with(|s| s == 429),
            without = self.injected.rate_limited_without_retry_after,
            e502 = self.injected.effect_then_502,
            answered = c.answered_502,
            dropped = self.injected.dropped,
            dups = c.duplicates.len(),
            lost = c.lost.len(),
            wrong = c.wrong.len(),
        );
        c.print_problems();
    }
}

/// Runs one daemon for a random while, then kills it (mostly) or stops it cleanly.
fn one_cycle(workspace: &Workspace, time: &TimeLine, rng: &mut impl Rng, report: &mut Report) {
    let from = workspace.log_len();
    let daemon = workspace.start_daemon(time);
    // One start in four is killed at a random moment of its recovery; the others get their
    // random while once they have started, so that a long history (each start loads it) still
    // leaves the daemon time to work however long the soak runs.
    if rng.gen_range(0..4) != 0 {
        workspace.wait_for_log_after(from, "\"baton started\"", Duration::from_secs(60));
    }
    let up = rng.gen_range(50..2500);
    std::thread::sleep(Duration::from_millis(up));
    match rng.gen_range(0..20) {
        // Now and then a clean stop (once the process has installed its signal handlers), and
        // now and then a kill in the middle of one.
        0 => {
            workspace.wait_for_signal_handlers(from);
            stop_cleanly(daemon, workspace);
            report.clean_restarts += 1;
        }
        1 => {
            daemon.signal("TERM");
            std::thread::sleep(Duration::from_millis(rng.gen_range(0..20)));
            daemon.sigkill();
            report.kills += 1;
        }
        _ => {
            daemon.sigkill();
            report.kills += 1;
        }
    }
}

/// Runs one daemon for `working` once it has started (however long its start takes on a loaded
/// machine), then stops it cleanly.
fn run_undisturbed(workspace: &Workspace, time: &TimeLine, working: Duration) {
    let from = workspace.log_len();
    let daemon = workspace.start_daemon(time);
    let started = workspace.wait_for_log_after(from, "\"baton started\"", Duration::from_secs(120));
    assert!(started, "the daemon did not start within two minutes");
    std::thread::sleep(working);
    stop_cleanly(daemon, workspace);
}

fn stop_cleanly(mut daemon: process::DaemonProcess, workspace: &Workspace) {
    daemon.signal("TERM");
    let Some(status) = daemon.wait_exit(Duration::from_secs(30)) else {
        panic!(
            "the daemon did not exit within 30 s of SIGTERM; its log ends:\n{}",
            tail(&workspace.log_text(), 60)
        );
    };
    assert!(
        status.success(),
        "the daemon exited with {status}; its log ends:\n{}",
        tail(&workspace.log_text(), 20)
    );
}

#[test]
fn every_fault_at_once_with_restarts_loses_and_repeats_nothing() {
    if !slow_tests_enabled("soak::every_fault_at_once_with_restarts_loses_and_repeats_nothing") {
        return;
    }
    let seed = env_number("BATON_SOAK_SEED").unwrap_or_else(|| rand::thread_rng().gen());
    let period = Duration::from_secs(env_number("BATON_SOAK_SECS").unwrap_or(60));
    eprintln!("fault soak: seed {seed} (rerun with BATON_SOAK_SEED={seed}), period {period:?}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let scenario_path = scratch.path().join("soak.scenario.yaml");
    let faults = std::env::var("BATON_SOAK_FAULTS").unwrap_or_else(|_| FAULTS.to_string());
    eprintln!("fault soak: faults {faults}");
    std::fs::write(&scenario_path, scenario(seed, &faults)).unwrap();
    let window = t(WINDOW_START);
    let time = TimeLine::starting_now(window - chrono::Duration::seconds(10), SPEED);
    let emulator = EmulatorProcess::start(&scenario_path, &time, &scratch.path().join("emu.log"));
    let workspace = Workspace::new(&emulator, DAEMON_CONFIG);
    for (file, yaml) in pipelines() {
        workspace.write_pipeline(file, &yaml);
    }
    // Looked at before the window, so every tick from its start is owed.
    for pipeline in PIPELINES {
        workspace.seed_cursor(pipeline, window - chrono::Duration::minutes(1));
    }
    let mut report = Report {
        seed,
        ..Report::default()
    };
    time.sleep_until(window);
    let began = Instant::now();
    let window_end: DateTime<Utc> =
        window + chrono::Duration::from_std(period.mul_f64(SPEED)).unwrap();
    while time.now() < window_end {
        one_cycle(&workspace, &time, &mut rng, &mut report);
    }
    report.real = began.elapsed();
    report.simulated = time.now() - window;
    eprintln!(
        "fault soak: period over at scenario time {} after {} SIGKILLs",
        time.now(),
        report.kills
    );

    // Pause every schedule where it stands, once an undisturbed daemon has caught every schedule
    // up to the period's end (a long history takes a while to load): the ticks owed are those
    // up to each cursor, so every tick of the period must have its run.
    let caught_up = window_end - chrono::Duration::minutes(TICK_EVERY_MINUTES);
    let mut tries = 0;
    let state = loop {
        run_undisturbed(&workspace, &time, Duration::from_secs(3));
        report.clean_restarts += 1;
        tries += 1;
        let state = workspace.load_state();
        let behind = PIPELINES.iter().any(|p| {
            state
                .cursors
                .get(&PipelineName((*p).into()))
                .and_then(|c| c.last_tick)
                .is_none_or(|tick| tick < caught_up)
        });
        if !behind || tries >= 10 {
            break state;
        }
    };
    let mut expected = std::collections::BTreeSet::new();
    for pipeline in PIPELINES {
        let cursor = state
            .cursors
            .get(&PipelineName(pipeline.into()))
            .and_then(|c| c.last_tick)
            .unwrap();
        assert!(
            cursor >= caught_up,
            "{pipeline}'s schedule stopped at {cursor}, before the period's end {window_end}"
        );
        workspace.write_cursor(pipeline, cursor, true);
        expected.extend(ticks(
            &[pipeline],
            window,
            cursor,
            chrono::Duration::minutes(TICK_EVERY_MINUTES),
        ));
    }

    // Quiescence: faults stay on; stop cleanly now and then to read the state until every
    // pipeline run has ended. Bounded: a run that has not ended by then is reported as lost.
    report.open_at_end = state
        .runs
        .values()
        .filter(|r| !r.state.is_terminal())
        .count();
    let drain_began = Instant::now();
    let give_up = drain_began + Duration::from_secs(300);
    let state = loop {
        run_undisturbed(&workspace, &time, Duration::from_secs(5));
        report.clean_restarts += 1;
        let state = workspace.load_state();
        if state.runs.values().all(|r| r.state.is_terminal()) || Instant::now() > give_up {
            break state;
        }
    };
    report.drain = drain_began.elapsed();
    let runs = runtime.block_on(emulator.runs());
    report.requests = runtime.block_on(emulator.request_counts());
    report.injected = runtime.block_on(emulator.faults()).injected;
    report.adopted = workspace.count_events("trigger_adopted");
    report.succeeded = state
        .runs
        .values()
        .filter(|r| r.state == PipelineRunState::Succeeded)
        .count();
    report.failed = state
        .runs
        .values()
        .filter(|r| r.state == PipelineRunState::Failed)
        .count();
    report.reruns = state
        .runs
        .values()
        .flat_map(|r| r.steps.values())
        .flat_map(|s| &s.attempts)
        .filter(|a| matches!(a.kind, AttemptKind::RerunFrom { .. }))
        .count();
    report.checked = check(&state, &runs, &expected);
    report.print();

    let errors = error_lines(&workspace, 5);
    let clean = report.checked.is_clean() && errors.is_empty();
    let injected = report.injected;
    let (kills, adopted, timed_out, reruns) = (
        report.kills,
        report.adopted,
        report.checked.timed_out,
        report.reruns,
    );
    if !clean {
        keep_files("fault soak", workspace, scratch);
    }
    assert!(
        errors.is_empty(),
        "the daemon logged errors: {}",
        errors.join("\n")
    );
    assert!(
        clean,
        "the fault soak found problems (seed {seed}); see above"
    );
    // Each fault, and each path through the daemon, must really have been exercised.
    assert!(
        kills > 0 && adopted > 0,
        "no trigger was adopted by its key"
    );
    assert!(injected.server_errors > 0, "no 5xx was injected");
    assert!(injected.rate_limited > 0, "no 429 was injected");
    assert!(
        injected.effect_then_502 > 0,
        "no trigger answered 502 after effect"
    );
    assert!(injected.dropped > 0, "no connection was dropped");
    assert!(timed_out > 0, "no attempt timed out");
    assert!(reruns > 0, "no rerun from failure");
}
