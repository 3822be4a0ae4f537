//! Concurrency policies against the emulator: a tick that arrives while the previous run of the
//! pipeline is still active is skipped, queued, or cancels the running one.

use crate::support::daemon::{pipeline, Harness};
use crate::support::scenario::scenario;
use crate::support::t;
use baton::dbt_cloud::wire::RunStatus;
use baton::engine::state::PipelineRunState;

fn scenario_yaml() -> String {
    scenario(&["{ id: 301, name: slow, duration: 8m }"])
}

/// Every 5 minutes, a job that takes about 8: each run overlaps the next tick.
fn every_five(policy: &str) -> baton::model::pipeline::Pipeline {
    pipeline(&format!(
        r#"
name: overlap
schedule: {{ cron: "*/5 * * * *" }}
concurrency: {policy}
steps:
  slow: {{ job_id: 301 }}
"#
    ))
}

async fn states(h: &Harness) -> Vec<(String, PipelineRunState)> {
    let mut runs: Vec<_> = h
        .pipeline_runs()
        .await
        .into_iter()
        .map(|r| (r.id.0, r.state))
        .collect();
    runs.sort_by(|a, b| a.0.cmp(&b.0));
    runs
}

#[tokio::test]
async fn skip_drops_the_tick_that_finds_the_previous_run_active() {
    let h = Harness::start(
        "2026-03-01T00:59:00Z",
        &scenario_yaml(),
        vec![every_five("skip")],
    )
    .await;
    h.run_until(t("2026-03-01T01:21:00Z"), 10).await;
    // 01:00 runs until ~01:08: 01:05 skipped; 01:10 runs until ~01:18: 01:15 skipped; 01:20 runs.
    assert_eq!(
        states(&h).await,
        vec![
            (
                "overlap@2026-03-01T01:00:00Z".into(),
                PipelineRunState::Succeeded
            ),
            (
                "overlap@2026-03-01T01:10:00Z".into(),
                PipelineRunState::Succeeded
            ),
            (
                "overlap@2026-03-01T01:20:00Z".into(),
                PipelineRunState::Running
            ),
        ]
    );
    assert_eq!(h.runs_of(301).len(), 3);
    h.shutdown().await;
}

#[tokio::test]
async fn queue_runs_every_tick_one_after_another() {
    let h = Harness::start(
        "2026-03-01T00:59:00Z",
        &scenario_yaml(),
        vec![every_five("queue")],
    )
    .await;
    h.run_until(t("2026-03-01T01:12:00Z"), 10).await;
    let s = states(&h).await;
    assert_eq!(s[0].1, PipelineRunState::Succeeded);
    assert_eq!(
        s[1].1,
        PipelineRunState::Running,
        "01:05 started after 01:00 ended"
    );
    assert_eq!(s[2].1, PipelineRunState::Queued, "01:10 waits its turn");
    let runs = h.runs_of(301);
    assert_eq!(runs.len(), 2, "never two runs of the pipeline at once");
    assert!(runs[1].created_at >= t("2026-03-01T01:08:00Z"));
    h.shutdown().await;
}

#[tokio::test]
async fn cancel_running_cancels_the_previous_run_then_starts_the_new_one() {
    let h = Harness::start(
        "2026-03-01T00:59:00Z",
        &scenario_yaml(),
        vec![every_five("cancel_running")],
    )
    .await;
    h.run_until(t("2026-03-01T01:06:00Z"), 10).await;
    let s = states(&h).await;
    assert_eq!(
        s[0],
        (
            "overlap@2026-03-01T01:00:00Z".into(),
            PipelineRunState::Cancelled
        )
    );
    assert_eq!(s[1].1, PipelineRunState::Running);
    let runs = h.runs_of(301);
    assert_eq!(runs.len(), 2);
    assert_eq!(
        runs[0].status,
        RunStatus::Cancelled,
        "confirmed in dbt Cloud"
    );
    assert!(runs[1].created_at >= t("2026-03-01T01:05:00Z"));
    h.shutdown().await;
}
