//! SIGTERM with runs in flight, with the real binary against `baton emulator` on one fast time
//! line: `on_shutdown: detach` leaves the run going in dbt Cloud and the next start re-attaches to
//! it without a second trigger; `on_shutdown: cancel` cancels it and waits for status 30 before
//! exiting; a trigger still waiting for its answer at shutdown is abandoned as `triggering` and
//! adopted by its key at the next start. Each exit comes within a few seconds. systemd hears
//! READY, RELOADING (with its monotonic time) and STOPPING.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

use crate::support::process::{EmulatedRun, EmulatorProcess, TimeLine, Workspace};
use crate::support::{eventually, t};
use baton::engine::state::{
    AttemptOutcome, AttemptPhase, CancelReason, PipelineRun, PipelineRunState, StepState,
};
use baton::model::pipeline::StepName;
use std::time::Duration;

const SPEED: f64 = 60.0;
/// The daemon must be gone this soon after SIGTERM (real time); it usually takes milliseconds.
const EXIT_LIMIT: Duration = Duration::from_secs(15);

const SCENARIO: &str = r#"
account_id: 70403103922125
token: shutdown-test-token
timing: { queue_delay: 1s, start_delay: 1s, cancel_delay: 2s }
jobs:
  - { id: 1, name: long, duration: 4m }
  - { id: 2, name: after, duration: 30s }
"#;

/// Fires once, at midnight; `long` runs four scenario minutes (four real seconds), then `after`.
const PIPELINE: &str = r#"name: nightly
schedule: { cron: "0 0 * * *", timezone: UTC }
steps:
  long: { job_id: 1 }
  after: { job_id: 2, depends_on: [long] }
"#;

const RUN_ID: &str = "nightly@2026-01-01T00:00:00Z";

struct Setup {
    _scratch: tempfile::TempDir,
    emulator: EmulatorProcess,
    workspace: Workspace,
    time: TimeLine,
    runtime: tokio::runtime::Runtime,
}

fn setup(daemon_config: &str, faults: &str) -> Setup {
    setup_at(SPEED, daemon_config, faults)
}

fn setup_at(speed: f64, daemon_config: &str, faults: &str) -> Setup {
    let scratch = tempfile::tempdir().unwrap();
    let scenario = scratch.path().join("shutdown.scenario.yaml");
    std::fs::write(&scenario, format!("{SCENARIO}faults: {faults}\n")).unwrap();
    let time = TimeLine::starting_now(t("2025-12-31T23:59:59Z"), speed);
    let emulator = EmulatorProcess::start(&scenario, &time, &scratch.path().join("emu.log"));
    let workspace = Workspace::new(&emulator, daemon_config);
    workspace.write_pipeline("nightly.yaml", PIPELINE);
    // The schedule was last looked at before midnight, so the midnight run is owed even when the
    // first daemon starts late on a loaded machine (it is then a catch-up run, of the same id).
    workspace.seed_cursor("nightly", t("2025-12-31T23:59:00Z"));
    Setup {
        _scratch: scratch,
        emulator,
        workspace,
        time,
        runtime: tokio::runtime::Runtime::new().unwrap(),
    }
}

impl Setup {
    fn runs(&self) -> Vec<EmulatedRun> {
        self.runtime.block_on(self.emulator.runs())
    }

    fn runs_of(&self, job: i64) -> Vec<EmulatedRun> {
        self.runs()
            .into_iter()
            .filter(|r| r.job_id == job)
            .collect()
    }

    /// Waits until the emulator holds a run of `job` that satisfies `ready`.
    fn wait_for_run(&self, job: i64, what: &str, ready: impl Fn(&EmulatedRun) -> bool) {
        let found = self
            .runtime
            .block_on(eventually(Duration::from_secs(60), || {
                let runs = self.emulator.runs();
                let ready = &ready;
                async move { runs.await.iter().any(|r| r.job_id == job && ready(r)) }
            }));
        assert!(found, "no run of job {job} {what}: {:?}", self.runs());
    }

    fn pipeline_run(&self) -> PipelineRun {
        let state = self.workspace.load_state();
        let id = baton::engine::state::PipelineRunId(RUN_ID.to_string());
        state
            .runs
            .get(&id)
            .cloned()
            .unwrap_or_else(|| panic!("no pipeline run {RUN_ID}: {:?}", state.runs.keys()))
    }
}

fn step<'a>(run: &'a PipelineRun, name: &str) -> &'a baton::engine::state::StepRun {
    &run.steps[&StepName(name.into())]
}

#[test]
fn sigterm_with_detach_leaves_the_run_going_and_the_next_start_reattaches_without_a_second_trigger()
{
    let s = setup("poll_interval: 5s\non_shutdown: detach\n", "{}");
    let daemon = s.workspace.start_daemon(&s.time);
    s.wait_for_run(1, "running", |r| r.status == 3);

    let (status, took) = daemon.sigterm(EXIT_LIMIT);
    eprintln!("detach: exited {status} {took:?} after SIGTERM");
    assert!(status.success(), "{status}");
    let long = s.runs_of(1);
    assert_eq!(long.len(), 1, "{long:?}");
    assert!(
        !long[0].is_terminal(),
        "detach must leave the run going: {long:?}"
    );
    let run = s.pipeline_run();
    let attempt = &step(&run, "long").attempts[0];
    assert_eq!(attempt.phase, AttemptPhase::Active);
    assert_eq!(attempt.run_id.map(|r| r.0), Some(long[0].id));

    let daemon = s.workspace.start_daemon(&s.time);
    assert!(s.workspace.wait_for_log(
        "\"event\":\"pipeline_run_succeeded\"",
        Duration::from_secs(60)
    ));
    let (status, _) = daemon.sigterm(EXIT_LIMIT);
    assert!(status.success(), "{status}");

    let run = s.pipeline_run();
    assert_eq!(run.state, PipelineRunState::Succeeded, "{run:?}");
    let long_step = step(&run, "long");
    assert_eq!(long_step.attempts.len(), 1);
    assert_eq!(long_step.attempts[0].run_id.map(|r| r.0), Some(long[0].id));
    assert_eq!(s.runs_of(1).len(), 1, "the long job was triggered again");
    assert_eq!(s.runs_of(2).len(), 1);
    assert_eq!(s.workspace.count_events("trigger_resent"), 0);
}

#[test]
fn sigterm_with_cancel_cancels_the_run_and_sees_status_30_before_exiting() {
    let s = setup("poll_interval: 5s\non_shutdown: cancel\n", "{}");
    let daemon = s.workspace.start_daemon(&s.time);
    s.wait_for_run(1, "running", |r| r.status == 3);

    let (status, took) = daemon.sigterm(EXIT_LIMIT);
    eprintln!("cancel: exited {status} {took:?} after SIGTERM");
    assert!(status.success(), "{status}");
    // Read right after the exit: the cancel was confirmed before it.
    let long = s.runs_of(1);
    assert_eq!(long.len(), 1, "{long:?}");
    assert_eq!(long[0].status, 30, "{long:?}");
    assert!(s.runs_of(2).is_empty());

    let run = s.pipeline_run();
    assert_eq!(run.state, PipelineRunState::Cancelled, "{run:?}");
    assert_eq!(run.cancel_reason, Some(CancelReason::Shutdown));
    let attempt = &step(&run, "long").attempts[0];
    assert_eq!(attempt.phase, AttemptPhase::Finished);
    assert_eq!(attempt.outcome, Some(AttemptOutcome::CancelledByBaton));
    assert_eq!(step(&run, "after").state, StepState::Cancelled);
}

#[test]
fn sigterm_with_cancel_at_real_speed_and_the_default_poll_interval_still_waits_for_status_30() {
    // Real time, a 10 s poll interval and a run that stops two seconds after its cancel: the
    // confirmation cannot wait for the next regular poll within the grace period.
    let s = setup_at(1.0, "on_shutdown: cancel\n", "{}");
    let daemon = s.workspace.start_daemon(&s.time);
    s.wait_for_run(1, "running", |r| r.status == 3);
    let (status, took) = daemon.sigterm(EXIT_LIMIT);
    eprintln!("cancel at real speed: exited {status} {took:?} after SIGTERM");
    assert!(status.success(), "{status}");
    let long = s.runs_of(1);
    assert_eq!(long[0].status, 30, "{long:?}");
    let run = s.pipeline_run();
    assert_eq!(run.state, PipelineRunState::Cancelled, "{run:?}");
}

#[test]
fn sigterm_during_a_slow_trigger_abandons_it_and_the_next_start_adopts_the_run_by_its_key() {
    // Every answer takes 20 real seconds: the trigger takes effect, then waits for its answer
    // past the shutdown grace period.
    let s = setup(
        "poll_interval: 5s\non_shutdown: detach\n",
        "{ latency_ms: 20000 }",
    );
    let daemon = s.workspace.start_daemon(&s.time);
    s.wait_for_run(1, "queued", |_| true);

    let (status, took) = daemon.sigterm(EXIT_LIMIT);
    eprintln!("slow trigger: exited {status} {took:?} after SIGTERM");
    assert!(status.success(), "{status}");
    let run = s.pipeline_run();
    let attempt = &step(&run, "long").attempts[0];
    assert_eq!(
        attempt.phase,
        AttemptPhase::Triggering,
        "the abandoned trigger stays triggering: {attempt:?}"
    );

    s.runtime
        .block_on(s.emulator.set_faults(serde_json::json!({})));
    let daemon = s.workspace.start_daemon(&s.time);
    assert!(s.workspace.wait_for_log(
        "\"event\":\"pipeline_run_succeeded\"",
        Duration::from_secs(60)
    ));
    let (status, _) = daemon.sigterm(EXIT_LIMIT);
    assert!(status.success(), "{status}");

    let long = s.runs_of(1);
    assert_eq!(long.len(), 1, "triggered twice: {long:?}");
    let run = s.pipeline_run();
    assert_eq!(run.state, PipelineRunState::Succeeded, "{run:?}");
    let attempt = &step(&run, "long").attempts[0];
    assert_eq!(attempt.run_id.map(|r| r.0), Some(long[0].id));
    assert_eq!(attempt.sends, 1, "{attempt:?}");
    assert!(s.workspace.count_events("trigger_adopted") >= 1);
}

#[test]
fn systemd_hears_ready_reloading_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let s = setup("poll_interval: 5s\n", "{}");
    let socket_path = s._scratch.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let daemon = s
        .workspace
        .start_daemon_with_env(&s.time, &[("NOTIFY_SOCKET", socket_path.as_os_str())]);
    let read = || {
        let mut buffer = [0u8; 512];
        let n = socket.recv(&mut buffer).unwrap();
        String::from_utf8_lossy(&buffer[..n]).into_owned()
    };
    let ready = read();
    assert!(ready.starts_with("READY=1\nSTATUS="), "{ready}");
    daemon.signal("HUP");
    let reloading = read();
    assert!(
        reloading.starts_with("RELOADING=1\n") && reloading.contains("MONOTONIC_USEC="),
        "{reloading}"
    );
    assert!(read().starts_with("READY=1\n"));
    daemon.signal("TERM");
    assert!(read().starts_with("STOPPING=1\n"));
    let (status, _) = daemon.sigterm(EXIT_LIMIT);
    assert!(status.success());
}
