//! Timers survive restarts: with the real binary killed and restarted every 20-odd scenario seconds
//! (each process lives far shorter than the timers), a step's two-minute timeout still cancels its
//! run about two minutes after dbt Cloud accepted it, and a two-minute retry backoff still starts
//! the next attempt about two minutes after the failure: both are re-armed from persisted instants,
//! not from process start. (Re-armed from process start, neither would ever fire: no process lives
//! two minutes. The 90 s tolerance covers a slow process start at 60x.)

#![allow(clippy::unwrap_used, clippy::print_stderr)]

use crate::support::process::{EmulatorProcess, TimeLine, Workspace};
use crate::support::t;
use baton::engine::state::{AttemptOutcome, CancelReason, PipelineRunId, PipelineRunState};
use baton::model::pipeline::StepName;
use std::time::Duration;

const SCENARIO: &str = r#"
account_id: 70403103922125
token: timers-test-token
timing: { queue_delay: 1s, start_delay: 1s, cancel_delay: 1s }
jobs:
  - { id: 1, name: hangs, duration: 1h }
  - { id: 2, name: fails, duration: 10s, outcome: error }
"#;

const HANGS: &str = r#"name: hangs
schedule: { cron: "0 0 * * *", timezone: UTC }
steps:
  s: { job_id: 1, timeout: 2m }
"#;

const FAILS: &str = r#"name: fails
schedule: { cron: "0 0 * * *", timezone: UTC }
steps:
  s:
    job_id: 2
    retry: { attempts: 2, backoff: 2m }
"#;

#[test]
fn timeouts_and_retry_backoffs_fire_on_time_across_restarts_shorter_than_them() {
    let scratch = tempfile::tempdir().unwrap();
    let scenario = scratch.path().join("timers.scenario.yaml");
    std::fs::write(&scenario, SCENARIO).unwrap();
    let time = TimeLine::starting_now(t("2025-12-31T23:59:59Z"), 60.0);
    let emulator = EmulatorProcess::start(&scenario, &time, &scratch.path().join("emu.log"));
    let workspace = Workspace::new(&emulator, "poll_interval: 5s\n");
    for (file, yaml, name) in [
        ("hangs.yaml", HANGS, "hangs"),
        ("fails.yaml", FAILS, "fails"),
    ] {
        workspace.write_pipeline(file, yaml);
        workspace.seed_cursor(name, t("2025-12-31T23:59:00Z"));
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();

    // Each daemon lives 0.4 real seconds (24 scenario seconds); six scenario minutes in all.
    let mut restarts = 0;
    while time.now() < t("2026-01-01T00:06:00Z") {
        let daemon = workspace.start_daemon(&time);
        std::thread::sleep(Duration::from_millis(400));
        daemon.sigkill();
        restarts += 1;
    }
    let daemon = workspace.start_daemon(&time);
    time.sleep_until(t("2026-01-01T00:07:00Z"));
    let (status, _) = daemon.sigterm(Duration::from_secs(15));
    assert!(status.success());
    eprintln!("timers: {restarts} kills");

    let runs = runtime.block_on(emulator.runs());
    let state = workspace.load_state();
    let step = StepName("s".into());

    let hangs = &state.runs[&PipelineRunId("hangs@2026-01-01T00:00:00Z".into())];
    assert_eq!(hangs.state, PipelineRunState::Failed, "{hangs:?}");
    let attempt = &hangs.steps[&step].attempts[0];
    assert_eq!(
        attempt.outcome,
        Some(AttemptOutcome::TimedOut),
        "{attempt:?}"
    );
    let cancel = attempt.cancel.as_ref().unwrap();
    assert_eq!(cancel.reason, CancelReason::Timeout);
    let accepted = attempt.accepted_at.unwrap();
    let late = cancel.requested_at - (accepted + chrono::Duration::minutes(2));
    assert!(
        late >= chrono::Duration::zero() && late < chrono::Duration::seconds(90),
        "the timeout fired {late} after its deadline"
    );
    let hung: Vec<_> = runs.iter().filter(|r| r.job_id == 1).collect();
    assert_eq!(hung.len(), 1);
    assert_eq!(hung[0].status, 30, "the run was cancelled in dbt Cloud");

    let fails = &state.runs[&PipelineRunId("fails@2026-01-01T00:00:00Z".into())];
    assert_eq!(fails.state, PipelineRunState::Failed, "{fails:?}");
    let attempts = &fails.steps[&step].attempts;
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    let failed_at = attempts[0].finished_at.unwrap();
    let late = attempts[1].created_at - (failed_at + chrono::Duration::minutes(2));
    assert!(
        late >= chrono::Duration::zero() && late < chrono::Duration::seconds(90),
        "the retry started {late} after its backoff ended"
    );
    assert_eq!(runs.iter().filter(|r| r.job_id == 2).count(), 2);
}
