//! SIGHUP with the real binary against `baton emulator` on one fast time line: a valid edit
//! schedules the new pipeline, stops the removed one and lets the run in flight finish under the
//! definition it started with; an invalid edit is refused with its errors logged and the last good
//! definitions keep running.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

use crate::support::process;
use crate::support::process::{EmulatedRun, EmulatorProcess, TimeLine, Workspace};
use crate::support::{eventually, t};
use baton::engine::state::{PipelineRunId, PipelineRunState};
use std::time::Duration;

const SCENARIO: &str = r#"
account_id: 70403103922125
token: reload-test-token
timing: { queue_delay: 1s, start_delay: 1s }
jobs:
  - { id: 1, name: alpha_first, duration: 3m }
  - { id: 2, name: alpha_second, duration: 10s }
  - { id: 3, name: alpha_second_edited, duration: 10s }
  - { id: 4, name: beta, duration: 10s }
  - { id: 5, name: gamma, duration: 10s }
"#;

const ALPHA: &str = r#"name: alpha
schedule: { cron: "0 0 * * *", timezone: UTC }
steps:
  first: { job_id: 1 }
  second: { job_id: 2, depends_on: [first] }
"#;

const ALPHA_EDITED: &str = r#"name: alpha
schedule: { cron: "0 0 * * *", timezone: UTC }
steps:
  first: { job_id: 1 }
  second: { job_id: 3, depends_on: [first] }
"#;

const BETA: &str = "name: beta\nschedule: { cron: \"* * * * *\" }\nsteps:\n  only: { job_id: 4 }\n";
const GAMMA: &str =
    "name: gamma\nschedule: { cron: \"* * * * *\" }\nsteps:\n  only: { job_id: 5 }\n";
const GAMMA_BROKEN: &str = "name: gamma\nschedule: { cron: \"* * * *\" }\nsteps:\n  only: { job_id: 5, depends_on: [nowhere] }\n";

struct Setup {
    _scratch: tempfile::TempDir,
    emulator: EmulatorProcess,
    workspace: Workspace,
    time: TimeLine,
    runtime: tokio::runtime::Runtime,
}

fn setup(pipelines: &[(&str, &str)]) -> Setup {
    let scratch = tempfile::tempdir().unwrap();
    let scenario = scratch.path().join("reload.scenario.yaml");
    std::fs::write(&scenario, SCENARIO).unwrap();
    let time = TimeLine::starting_now(t("2025-12-31T23:59:59Z"), 60.0);
    let emulator = EmulatorProcess::start(&scenario, &time, &scratch.path().join("emu.log"));
    let workspace = Workspace::new(&emulator, "poll_interval: 5s\n");
    for (file, yaml) in pipelines {
        workspace.write_pipeline(file, yaml);
        let name = yaml.lines().next().unwrap().trim_start_matches("name: ");
        workspace.seed_cursor(name, t("2025-12-31T23:59:00Z"));
    }
    Setup {
        _scratch: scratch,
        emulator,
        workspace,
        time,
        runtime: tokio::runtime::Runtime::new().unwrap(),
    }
}

impl Setup {
    fn runs_of(&self, job: i64) -> Vec<EmulatedRun> {
        self.runtime
            .block_on(self.emulator.runs())
            .into_iter()
            .filter(|r| r.job_id == job)
            .collect()
    }

    fn wait_until(&self, what: &str, ready: impl Fn(&[EmulatedRun]) -> bool) {
        let found = self
            .runtime
            .block_on(eventually(Duration::from_secs(60), || {
                let runs = self.emulator.runs();
                let ready = &ready;
                async move { ready(&runs.await) }
            }));
        assert!(found, "timed out waiting until {what}");
    }

    fn reload(&self, daemon: &process::DaemonProcess, expect: &str) {
        let before = self.workspace.log_count(expect);
        daemon.signal("HUP");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while self.workspace.log_count(expect) == before {
            assert!(
                std::time::Instant::now() < deadline,
                "no {expect:?} in the log after SIGHUP"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn job_runs(runs: &[EmulatedRun], job: i64) -> usize {
    runs.iter().filter(|r| r.job_id == job).count()
}

#[test]
fn sighup_with_a_valid_edit_adds_removes_and_leaves_the_run_in_flight_on_its_definition() {
    let s = setup(&[("alpha.yaml", ALPHA), ("beta.yaml", BETA)]);
    let daemon = s.workspace.start_daemon(&s.time);
    s.wait_until("alpha's first step runs and beta has run", |runs| {
        runs.iter().any(|r| r.job_id == 1 && r.status == 3) && job_runs(runs, 4) >= 1
    });

    s.workspace.write_pipeline("alpha.yaml", ALPHA_EDITED);
    s.workspace.remove_pipeline("beta.yaml");
    s.workspace.write_pipeline("gamma.yaml", GAMMA);
    s.reload(&daemon, "reloaded the pipeline files");
    let reloaded_at = s.time.now();

    // gamma ticks twice; alpha's run (started before the edit) ends.
    s.wait_until("gamma has run twice", |runs| job_runs(runs, 5) >= 2);
    assert!(s.workspace.wait_for_log(
        "\"event\":\"pipeline_run_succeeded\",\"pipeline\":\"alpha\"",
        Duration::from_secs(60)
    ));
    let (status, _) = daemon.sigterm(Duration::from_secs(15));
    assert!(status.success());

    assert_eq!(
        s.runs_of(2).len(),
        1,
        "the run in flight keeps its definition"
    );
    assert!(
        s.runs_of(3).is_empty(),
        "the edit applies to later runs only"
    );
    let late_beta: Vec<_> = s
        .runs_of(4)
        .into_iter()
        .filter(|r| r.created_at > reloaded_at + chrono::Duration::seconds(30))
        .collect();
    assert!(late_beta.is_empty(), "beta was removed: {late_beta:?}");
    let state = s.workspace.load_state();
    let alpha = &state.runs[&PipelineRunId("alpha@2026-01-01T00:00:00Z".into())];
    assert_eq!(alpha.state, PipelineRunState::Succeeded);
    assert_eq!(alpha.definition.steps[1].job_id.0, 2);
    for run in state.runs.values() {
        if run.pipeline().0 == "beta" {
            assert!(run.logical_date <= reloaded_at, "{}", run.id);
            assert!(run.state.is_terminal(), "{}", run.id);
        }
    }
}

#[test]
fn sighup_with_an_invalid_edit_is_refused_with_its_errors_and_the_last_good_definitions_run_on() {
    let s = setup(&[("gamma.yaml", GAMMA)]);
    let daemon = s.workspace.start_daemon(&s.time);
    s.wait_until("gamma has run", |runs| job_runs(runs, 5) >= 1);

    s.workspace.write_pipeline("gamma.yaml", GAMMA_BROKEN);
    s.reload(&daemon, "reload refused");
    let refused_at = s.time.now();
    let log = s.workspace.log_text();
    let refusal = log.lines().find(|l| l.contains("reload refused")).unwrap();
    assert!(refusal.contains("gamma.yaml"), "{refusal}");
    assert!(refusal.contains("nowhere"), "{refusal}");

    s.wait_until("gamma runs on under its last good definition", |runs| {
        runs.iter()
            .any(|r| r.job_id == 5 && r.created_at > refused_at + chrono::Duration::minutes(1))
    });
    let (status, _) = daemon.sigterm(Duration::from_secs(15));
    assert!(status.success());
}
