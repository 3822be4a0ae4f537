//! Every refusal of an operator request, through the control API: the status and the engine's
//! own words (the HTTP layer checks nothing itself).

use crate::support::api::{seg, Api};
use crate::support::daemon::{pipeline, Harness};
use crate::support::scenario::{scenario, HANGS_JOB, STAGING_JOB};
use serde_json::{json, Value};

fn pipelines() -> Vec<baton::model::pipeline::Pipeline> {
    [
        "name: quick\nsteps:\n  staging: { job_id: 101 }\n",
        "name: hangs\nconcurrency: skip\nsteps:\n  long: { job_id: 106 }\n",
    ]
    .into_iter()
    .map(pipeline)
    .collect()
}

/// Posts `body` to `path` and checks the refusal's status and that its message holds `needle`.
async fn refused(api: &Api, path: &str, body: Value, status: u16, needle: &str) {
    let (got, answer) = api.post(path, body).await;
    assert_eq!(got, status, "{path}: {answer}");
    let message = answer["error"].as_str().unwrap_or_default();
    assert!(
        message.contains(needle),
        "{path}: `{needle}` not in {answer}"
    );
}

#[tokio::test]
async fn each_refusal_names_its_reason() {
    let h = Harness::start(
        "2026-03-01T01:30:00Z",
        &scenario(&[STAGING_JOB, HANGS_JOB]),
        pipelines(),
    )
    .await;
    let api = Api::start(&h).await;

    // Unknown things: 404.
    refused(
        &api,
        "/api/v1/pipelines/nope/trigger",
        json!({}),
        404,
        "no pipeline named `nope`",
    )
    .await;
    refused(
        &api,
        "/api/v1/pipelines/nope/pause",
        json!({}),
        404,
        "no pipeline named `nope`",
    )
    .await;
    refused(
        &api,
        "/api/v1/pipelines/nope/resume",
        json!({}),
        404,
        "no pipeline named `nope`",
    )
    .await;
    let ghost = seg("quick@2000-01-01T00:00:00Z");
    refused(
        &api,
        &format!("/api/v1/runs/{ghost}/cancel"),
        json!({}),
        404,
        "no pipeline run `quick@2000-01-01T00:00:00Z`",
    )
    .await;
    refused(
        &api,
        &format!("/api/v1/runs/{ghost}/retry"),
        json!({}),
        404,
        "no pipeline run",
    )
    .await;
    refused(
        &api,
        "/api/v1/backfills/bf-none/cancel",
        json!({}),
        404,
        "no backfill `bf-none`",
    )
    .await;
    refused(
        &api,
        "/api/v1/pipelines/nope/backfills",
        json!({"from": "2026-02-01", "to": "2026-02-02"}),
        404,
        "no pipeline named `nope`",
    )
    .await;

    // A date that is not one: 400.
    refused(
        &api,
        "/api/v1/pipelines/quick/trigger",
        json!({"logical_date": "soon"}),
        400,
        "`soon` is not a date",
    )
    .await;

    // A run that exists already; a second run while one is active under `skip`: 409.
    let (status, body) = api
        .post(
            "/api/v1/pipelines/hangs/trigger",
            json!({"logical_date": "2026-02-01"}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    refused(
        &api,
        "/api/v1/pipelines/hangs/trigger",
        json!({"logical_date": "2026-02-01"}),
        409,
        "pipeline run hangs@2026-02-01T00:00:00Z exists already (",
    )
    .await;
    h.run_for(60, 10).await;
    refused(
        &api,
        "/api/v1/pipelines/hangs/trigger",
        json!({"logical_date": "2026-02-02"}),
        409,
        "not started: the previous run hangs@2026-02-01T00:00:00Z is still active and the pipeline's concurrency policy is `skip`",
    )
    .await;

    // Retrying a run that has not failed: 409, naming its state.
    let hanging = seg("hangs@2026-02-01T00:00:00Z");
    refused(
        &api,
        &format!("/api/v1/runs/{hanging}/retry"),
        json!({}),
        409,
        "only a failed or cancelled pipeline run can be retried; hangs@2026-02-01T00:00:00Z is Running",
    )
    .await;

    // Cancelling a run that is over: 409.
    let (status, body) = api
        .post(
            "/api/v1/pipelines/quick/trigger",
            json!({"logical_date": "2026-02-01"}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    h.run_for(600, 10).await;
    refused(
        &api,
        &format!("/api/v1/runs/{}/cancel", seg("quick@2026-02-01T00:00:00Z")),
        json!({}),
        409,
        "pipeline run quick@2026-02-01T00:00:00Z is already over (Succeeded); nothing to cancel",
    )
    .await;

    // A backfill the engine refuses: 400 with its reason.
    refused(
        &api,
        "/api/v1/pipelines/quick/backfills",
        json!({"from": "2026-02-03", "to": "2026-02-01", "every": "1d"}),
        400,
        "backfill refused: ",
    )
    .await;
    refused(
        &api,
        "/api/v1/pipelines/quick/backfills",
        json!({"from": "then", "to": "2026-02-01"}),
        400,
        "`then` is not a date",
    )
    .await;

    // Cancelling a backfill that is over: 409, naming its state.
    let (status, body) = api
        .post(
            "/api/v1/pipelines/quick/backfills",
            json!({"from": "2026-01-10", "to": "2026-01-11", "every": "1d"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    let (status, body) = api
        .post(&format!("/api/v1/backfills/{id}/cancel"), json!({}))
        .await;
    assert_eq!(status, 202, "{body}");
    refused(
        &api,
        &format!("/api/v1/backfills/{id}/cancel"),
        json!({}),
        409,
        &format!("backfill {id} is already over (cancelled)"),
    )
    .await;

    api.stop().await;
    h.shutdown().await;
}
