//! The daemon against the emulator on a manual clock: schedules in a zone, DAG order with fan-in,
//! rendered overrides, retries through rerun, failure isolation, timeouts with confirmed cancels.

use crate::support::daemon::{pipeline, Harness};
use crate::support::scenario::{scenario, BROKEN_JOB, HANGS_JOB, MARTS_JOB, STAGING_JOB};
use crate::support::t;
use baton::dbt_cloud::wire::{RunStatus, TriggerRequest};
use baton::engine::state::{AttemptOutcome, PipelineRunState, StepState};
use baton::ids::JobId;
use baton::model::pipeline::StepName;

fn scenario_yaml() -> String {
    scenario(&[
        STAGING_JOB,
        MARTS_JOB,
        "{ id: 103, name: exposures, duration: 1m }",
        "{ id: 104, name: flaky, duration: 1m, outcome: fail_first, fail_first: 1 }",
        BROKEN_JOB,
        HANGS_JOB,
        "{ id: 107, name: after_broken, duration: 1m }",
    ])
}

fn step_of<'a>(
    run: &'a baton::engine::state::PipelineRun,
    name: &str,
) -> &'a baton::engine::state::StepRun {
    &run.steps[&StepName(name.into())]
}

#[tokio::test]
async fn a_three_level_dag_runs_on_its_cron_in_its_zone_in_order_with_rendered_overrides() {
    let chain = pipeline(
        r#"
name: chain
schedule: { cron: "0 2 * * *", timezone: Europe/Amsterdam }
steps:
  staging: { job_id: 101 }
  marts:
    job_id: 102
    depends_on: [staging]
    overrides: { schema_override: "marts_{{ ds_nodash }}", threads_override: 8 }
  exposures: { job_id: 103, depends_on: [marts, staging] }
"#,
    );
    // 00:30 UTC is 01:30 in Amsterdam: the tick is at 01:00 UTC.
    let h = Harness::start("2026-03-01T00:30:00Z", &scenario_yaml(), vec![chain]).await;
    h.run_until(t("2026-03-01T00:59:50Z"), 60).await;
    assert!(h.emulator.runs().is_empty(), "nothing before the tick");
    h.run_until(t("2026-03-01T01:30:00Z"), 10).await;

    let (staging, marts, exposures) = (h.runs_of(101), h.runs_of(102), h.runs_of(103));
    assert_eq!((staging.len(), marts.len(), exposures.len()), (1, 1, 1));
    assert_eq!(staging[0].created_at, t("2026-03-01T01:00:00Z"));
    assert!(marts[0].created_at >= staging[0].created_at + chrono::Duration::minutes(3));
    assert!(exposures[0].created_at >= marts[0].created_at + chrono::Duration::minutes(5));
    assert_eq!(
        marts[0].request.schema_override.as_deref(),
        Some("marts_20260301")
    );
    assert_eq!(marts[0].request.threads_override, Some(8));
    assert_eq!(staging[0].request.schema_override, None);
    for r in [&staging[0], &marts[0], &exposures[0]] {
        assert!(
            r.cause.contains("chain") && r.cause.contains("[bt-"),
            "{}",
            r.cause
        );
        assert!(r.cause.chars().count() <= 255);
    }
    let run = h.pipeline_run("chain@2026-03-01T01:00:00Z").await;
    assert_eq!(run.state, PipelineRunState::Succeeded);
    let attempt = &step_of(&run, "marts").attempts[0];
    assert_eq!(attempt.run_id, Some(marts[0].id));
    assert!(attempt
        .href
        .as_deref()
        .is_some_and(|h| h.contains(&marts[0].id.to_string())));

    // The next night fires once more, and only once.
    h.run_until(t("2026-03-02T01:30:00Z"), 60).await;
    assert_eq!(h.runs_of(101).len(), 2);
    assert_eq!(h.runs_of(103).len(), 2);
    assert_eq!(
        h.runs_of(102)[1].request.schema_override.as_deref(),
        Some("marts_20260302")
    );
    h.shutdown().await;
}

#[tokio::test]
async fn a_flaky_step_succeeds_on_retry_through_rerun_from_failure() {
    let p = pipeline(
        r#"
name: flaky
schedule: { cron: "0 * * * *" }
steps:
  only:
    job_id: 104
    retry: { attempts: 3, backoff: 1m, from_failure: true }
"#,
    );
    let h = Harness::start("2026-03-01T00:59:00Z", &scenario_yaml(), vec![p]).await;
    h.run_until(t("2026-03-01T01:10:00Z"), 10).await;
    let runs = h.runs_of(104);
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(runs[0].status, RunStatus::Error);
    assert!(runs[1].via_rerun);
    assert_eq!(runs[1].resumed_from, Some(runs[0].id));
    assert_eq!(runs[1].status, RunStatus::Success);
    let run = h.pipeline_run("flaky@2026-03-01T01:00:00Z").await;
    assert_eq!(run.state, PipelineRunState::Succeeded);
    let attempts = &step_of(&run, "only").attempts;
    assert_eq!(attempts[0].outcome, Some(AttemptOutcome::Error));
    assert!(
        attempts[1].created_at >= attempts[0].finished_at.unwrap() + chrono::Duration::minutes(1)
    );
    h.shutdown().await;
}

#[tokio::test]
async fn a_failing_step_stops_its_downstream_but_not_the_independent_branch() {
    let p = pipeline(
        r#"
name: split
schedule: { cron: "0 * * * *" }
steps:
  broken: { job_id: 105 }
  after_broken: { job_id: 107, depends_on: [broken] }
  independent: { job_id: 101 }
  after_independent: { job_id: 103, depends_on: [independent] }
"#,
    );
    let h = Harness::start("2026-03-01T00:59:00Z", &scenario_yaml(), vec![p]).await;
    h.run_until(t("2026-03-01T01:20:00Z"), 10).await;
    assert_eq!(h.runs_of(105).len(), 1, "no retry by default");
    assert!(
        h.runs_of(107).is_empty(),
        "downstream of a failure never triggered"
    );
    assert_eq!(h.runs_of(103).len(), 1, "the independent branch went on");
    let run = h.pipeline_run("split@2026-03-01T01:00:00Z").await;
    assert_eq!(run.state, PipelineRunState::Failed);
    assert_eq!(
        step_of(&run, "after_broken").state,
        StepState::UpstreamFailed
    );
    assert_eq!(
        step_of(&run, "after_independent").state,
        StepState::Succeeded
    );
    h.shutdown().await;
}

#[tokio::test]
async fn a_hung_run_is_cancelled_at_its_timeout_and_ends_status_30_in_dbt_cloud() {
    let p = pipeline(
        r#"
name: hung
schedule: { cron: "0 * * * *" }
steps:
  hangs: { job_id: 106, timeout: 30m, overrides: { timeout_seconds_override: 7200 } }
"#,
    );
    let h = Harness::start("2026-03-01T00:59:00Z", &scenario_yaml(), vec![p]).await;
    h.run_until(t("2026-03-01T01:29:50Z"), 10).await;
    assert_eq!(h.runs_of(106)[0].status, RunStatus::Running);
    h.run_until(t("2026-03-01T01:31:00Z"), 5).await;
    let runs = h.runs_of(106);
    assert_eq!(runs.len(), 1);
    assert_eq!(
        runs[0].status,
        RunStatus::Cancelled,
        "confirmed in dbt Cloud"
    );
    assert_eq!(
        runs[0].request.timeout_seconds_override,
        Some(7200),
        "passed through"
    );
    let run = h.pipeline_run("hung@2026-03-01T01:00:00Z").await;
    let attempt = &step_of(&run, "hangs").attempts[0];
    assert_eq!(attempt.outcome, Some(AttemptOutcome::TimedOut));
    assert_eq!(attempt.status, Some(RunStatus::Cancelled));
    assert_eq!(run.state, PipelineRunState::Failed);
    h.shutdown().await;
}

#[tokio::test]
async fn a_run_stuck_in_the_queue_hits_queue_timeout() {
    let p = pipeline(
        r#"
name: queued
schedule: { cron: "0 * * * *" }
steps:
  waits: { job_id: 106, queue_timeout: 10m }
"#,
    );
    let h = Harness::start("2026-03-01T00:50:00Z", &scenario_yaml(), vec![p]).await;
    // Someone else's run occupies the job: dbt Cloud runs one run of a job at a time.
    let blocker = h
        .client()
        .trigger(
            JobId(106),
            &TriggerRequest {
                cause: "manual".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    h.run_until(t("2026-03-01T01:05:00Z"), 10).await;
    let run = h.pipeline_run("queued@2026-03-01T01:00:00Z").await;
    let attempt = &step_of(&run, "waits").attempts[0];
    assert_eq!(attempt.status, Some(RunStatus::Queued));
    assert_eq!(attempt.blocked_by, vec![blocker.id]);
    h.run_until(t("2026-03-01T01:11:00Z"), 10).await;
    let run = h.pipeline_run("queued@2026-03-01T01:00:00Z").await;
    let attempt = &step_of(&run, "waits").attempts[0];
    assert_eq!(attempt.outcome, Some(AttemptOutcome::QueueTimedOut));
    let ours = h
        .runs_of(106)
        .into_iter()
        .find(|r| r.id != blocker.id)
        .unwrap();
    assert_eq!(ours.status, RunStatus::Cancelled);
    h.shutdown().await;
}
