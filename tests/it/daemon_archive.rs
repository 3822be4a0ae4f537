//! Finished pipeline runs leave the daemon's memory after `memory_window` and live on in the
//! store's history: the API still shows them, a restart does not read them back in full, a run
//! already archived is not started again for the same date, and an archived failed run can be
//! retried. Real store, real client, emulator on a manual clock.

#![allow(clippy::unwrap_used)]

use crate::support::api::{seg, Api};
use crate::support::daemon::{pipeline, Harness};
use crate::support::scenario::{scenario, BROKEN_JOB, STAGING_JOB};
use crate::support::t;
use baton::engine::state::{PipelineRunId, PipelineRunState};
use serde_json::json;

fn scenario_yaml() -> String {
    scenario(&[STAGING_JOB, BROKEN_JOB])
}

fn pipelines() -> Vec<baton::model::pipeline::Pipeline> {
    vec![
        pipeline(
            r#"
name: chain
schedule: { cron: "0 2 * * *", timezone: UTC }
steps:
  staging: { job_id: 101 }
"#,
        ),
        pipeline(
            r#"
name: broken
steps:
  staging: { job_id: 101 }
  fails: { job_id: 105, depends_on: [staging] }
"#,
        ),
    ]
}

/// (in memory, archived) for a run id.
async fn whereabouts(h: &Harness, id: &str) -> (bool, Option<PipelineRunState>) {
    let id = PipelineRunId(id.into());
    h.daemon
        .inspect(move |engine, _| {
            let state = engine.state();
            (
                state.runs.contains_key(&id),
                state.archived.get(&id).map(|a| a.state),
            )
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn archived_runs_are_served_from_the_store_and_never_run_twice() {
    let mut h = Harness::start("2026-03-01T01:59:00Z", &scenario_yaml(), pipelines()).await;
    let api = Api::start(&h).await;
    let chain = "chain@2026-03-01T02:00:00Z";

    h.run_until(t("2026-03-01T02:04:00Z"), 30).await;
    assert_eq!(whereabouts(&h, chain).await, (true, None));
    // A minute after it finished (02:03-ish), the archive pass moves it out of memory.
    h.run_until(t("2026-03-01T02:20:00Z"), 30).await;
    assert_eq!(
        whereabouts(&h, chain).await,
        (false, Some(PipelineRunState::Succeeded))
    );

    let (status, run) = api.get(&format!("/api/v1/runs/{}", seg(chain))).await;
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["state"], "succeeded");
    assert_eq!(run["steps"][0]["name"], "staging");
    let (status, runs) = api.get("/api/v1/pipelines/chain/runs").await;
    assert_eq!(status, 200, "{runs}");
    assert_eq!(runs[0]["id"], chain);
    let (_, p) = api.get("/api/v1/pipelines/chain").await;
    assert_eq!(p["last_run"]["id"], chain, "{p}");
    assert_eq!(p["recent_runs"][0]["id"], chain, "{p}");

    // A failed run, archived, then retried: it comes back into memory and its failed step runs
    // again in dbt Cloud.
    let (status, created) = api
        .post(
            "/api/v1/pipelines/broken/trigger",
            json!({ "logical_date": "2026-03-01T02:20:00Z" }),
        )
        .await;
    assert_eq!(status, 202, "{created}");
    let broken = "broken@2026-03-01T02:20:00Z";
    h.run_until(t("2026-03-01T02:45:00Z"), 30).await;
    assert_eq!(
        whereabouts(&h, broken).await,
        (false, Some(PipelineRunState::Failed))
    );
    assert_eq!(h.runs_of(105).len(), 1);

    // After a restart the archive is still an index entry, not a record in memory.
    api.stop().await;
    h.restart(None).await;
    let api = Api::start(&h).await;
    assert_eq!(
        whereabouts(&h, chain).await,
        (false, Some(PipelineRunState::Succeeded))
    );
    let (status, answer) = api
        .post(
            "/api/v1/pipelines/chain/trigger",
            json!({ "logical_date": "2026-03-01T02:00:00Z" }),
        )
        .await;
    assert_eq!(status, 409, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("exists already"),
        "{answer}"
    );
    let (status, preview) = api
        .post(
            "/api/v1/pipelines/chain/backfills",
            json!({ "from": "2026-03-01", "to": "2026-03-01", "dry_run": true }),
        )
        .await;
    assert_eq!(status, 200, "{preview}");
    assert!(
        preview.to_string().contains("already ran"),
        "an archived run's date counts as run: {preview}"
    );

    let (status, retried) = api
        .post(&format!("/api/v1/runs/{}/retry", seg(broken)), json!({}))
        .await;
    assert_eq!(status, 202, "{retried}");
    assert_eq!(whereabouts(&h, broken).await.1, None);
    h.run_for(600, 30).await;
    assert_eq!(h.runs_of(105).len(), 2, "the failed step ran again");
    assert_eq!(h.runs_of(101).len(), 2, "the succeeded step was kept");
    let run = h.pipeline_run(broken).await;
    assert_eq!(run.state, PipelineRunState::Failed);
    assert_eq!(h.pipeline_runs().await.len(), 2);
    api.stop().await;
    h.shutdown().await;
}
