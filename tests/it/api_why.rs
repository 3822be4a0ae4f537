//! `why` names the right reason in each case: schedule, no schedule, suspended, paused (see
//! api_routes), upstream, running, dbt Cloud's queue with `blocked_by`, a concurrency limit, a
//! retry backoff, the account's in-flight cap and its request budget (a 429 on the trigger).

#![allow(clippy::unwrap_used)]

use crate::support::api::Api;
use crate::support::daemon;
use crate::support::daemon::{pipeline, Harness};
use crate::support::scenario::{scenario, BROKEN_JOB, HANGS_JOB, MARTS_JOB, STAGING_JOB};
use crate::support::t;
use serde_json::{json, Value};

fn scenario_yaml() -> String {
    scenario(&[STAGING_JOB, MARTS_JOB, BROKEN_JOB, HANGS_JOB])
}

fn pipelines() -> Vec<baton::model::pipeline::Pipeline> {
    [
        r#"
name: nightly
schedule: { cron: "0 2 * * *", timezone: Europe/Amsterdam }
steps:
  staging: { job_id: 101 }
  marts: { job_id: 102, depends_on: [staging] }
"#,
        "name: manual\nsteps:\n  only: { job_id: 101 }\n",
        "name: off\nsuspended: true\nschedule: { cron: \"0 3 * * *\" }\nsteps:\n  only: { job_id: 101 }\n",
        "name: twice\nconcurrency: queue\nsteps:\n  long: { job_id: 106 }\n",
        "name: sharer\nsteps:\n  long: { job_id: 106 }\n",
        "name: flaky\nsteps:\n  fails:\n    job_id: 105\n    retry: { attempts: 2, backoff: 10m }\n",
    ]
    .into_iter()
    .map(pipeline)
    .collect()
}

async fn why(api: &Api, pipeline: &str, step: Option<&str>) -> Value {
    let path = match step {
        Some(s) => format!("/api/v1/pipelines/{pipeline}/why?step={s}"),
        None => format!("/api/v1/pipelines/{pipeline}/why"),
    };
    let (status, body) = api.get(&path).await;
    assert_eq!(status, 200, "{body}");
    body
}

fn sentence(v: &Value) -> &str {
    v["sentence"].as_str().unwrap()
}

#[tokio::test]
async fn why_names_each_reason() {
    let h = Harness::start("2026-03-01T00:30:00Z", &scenario_yaml(), pipelines()).await;
    let api = Api::start(&h).await;
    h.settle().await;

    let w = why(&api, "nightly", None).await;
    assert_eq!(w["reason"], "schedule", "{w}");
    assert_eq!(w["until"], "2026-03-01T01:00:00Z", "{w}");
    assert!(
        sentence(&w).contains("next run at 2026-03-01 02:00:00 CET (01:00:00 UTC)"),
        "{w}"
    );
    let w = why(&api, "manual", None).await;
    assert_eq!(w["reason"], "unscheduled", "{w}");
    let w = why(&api, "off", None).await;
    assert_eq!(w["reason"], "suspended", "{w}");

    // Upstream, then running in dbt Cloud.
    h.run_until(t("2026-03-01T01:01:00Z"), 30).await;
    let w = why(&api, "nightly", Some("marts")).await;
    assert_eq!(w["reason"], "upstream", "{w}");
    assert!(sentence(&w).contains("staging (running)"), "{w}");
    let w = why(&api, "nightly", None).await;
    assert_eq!(w["step"], "staging", "{w}");
    assert_eq!(w["reason"], "running", "{w}");
    assert_eq!(w["dbt_run"], h.runs_of(101)[0].id.0, "{w}");

    // A concurrency limit, then dbt Cloud's queue behind a run of the same job.
    api.post("/api/v1/pipelines/twice/trigger", json!({})).await;
    h.run_for(60, 10).await;
    let first = h.runs_of(106)[0].id.0;
    let (status, _) = api
        .post(
            "/api/v1/pipelines/twice/trigger",
            json!({"logical_date": "2026-03-01T01:05:00Z"}),
        )
        .await;
    assert_eq!(status, 202);
    h.settle().await;
    let w = why(&api, "twice", None).await;
    assert_eq!(w["reason"], "concurrency_limit", "{w}");
    assert!(
        sentence(&w).contains("twice@2026-03-01T01:01:00Z") && sentence(&w).contains("queue"),
        "{w}"
    );
    api.post("/api/v1/pipelines/sharer/trigger", json!({}))
        .await;
    h.run_for(60, 10).await;
    let w = why(&api, "sharer", None).await;
    assert_eq!(w["reason"], "dbt_cloud_queue", "{w}");
    assert!(sentence(&w).contains(&format!("behind run {first}")), "{w}");

    // A retry backoff, with its end.
    api.post("/api/v1/pipelines/flaky/trigger", json!({})).await;
    h.run_for(120, 10).await;
    let w = why(&api, "flaky", None).await;
    assert_eq!(w["reason"], "retry_backoff", "{w}");
    assert!(
        w["until"].as_str().is_some() && sentence(&w).contains("attempt 1 ended error"),
        "{w}"
    );

    let (status, body) = api.get("/api/v1/pipelines/nightly/why?step=nope").await;
    assert_eq!(status, 404, "{body}");
    api.stop().await;
    h.shutdown().await;
}

#[tokio::test]
async fn why_names_the_accounts_in_flight_cap() {
    let mut settings = daemon::settings();
    settings.engine.max_in_flight = 1;
    let h = Harness::start_with(
        "2026-03-01T00:30:00Z",
        &scenario_yaml(),
        pipelines(),
        settings,
    )
    .await;
    let api = Api::start(&h).await;
    api.post("/api/v1/pipelines/twice/trigger", json!({})).await;
    h.run_for(30, 10).await;
    api.post("/api/v1/pipelines/manual/trigger", json!({}))
        .await;
    h.run_for(30, 10).await;
    let w = why(&api, "manual", None).await;
    assert_eq!(w["reason"], "in_flight_cap", "{w}");
    assert!(sentence(&w).contains("1 of 1"), "{w}");
    api.stop().await;
    h.shutdown().await;
}

#[tokio::test]
async fn why_names_the_request_budget_while_a_429_cooldown_holds_the_trigger() {
    use baton::clock::{Clock, ManualClock, SharedClock};
    use std::sync::Arc;
    use tokio_util::sync::CancellationToken;
    // The API must see the daemon's own client (its budget), so this test wires them itself.
    let clock = ManualClock::new(t("2026-03-01T00:30:00Z"));
    let shared: SharedClock = Arc::new(clock.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stop = CancellationToken::new();
    let scenario = baton::emulator::Scenario::from_yaml_str(&scenario_yaml()).unwrap();
    let emulator =
        baton::emulator::Emulator::start(scenario, shared.clone(), listener, stop.clone())
            .await
            .unwrap();
    let client = daemon::client(&clock, &emulator);
    let dir = tempfile::tempdir().unwrap();
    let store = baton::store::Store::open(dir.path()).unwrap();
    let d = baton::runtime::Daemon::new(
        daemon::settings(),
        pipelines(),
        store,
        client.clone(),
        shared,
    )
    .unwrap();
    let daemon_stop = CancellationToken::new();
    let (handle, task) = baton::runtime::spawn(d, daemon_stop.clone());
    let api = Api::serve(handle.clone(), client.clone(), None).await;
    handle.settled(clock.now()).await.unwrap();

    let mut faults = emulator.faults();
    faults.rate_limit_next = 1;
    faults.retry_after_seconds = Some(120);
    faults.routes = vec!["trigger_run".into()];
    emulator.set_faults(faults);
    api.post("/api/v1/pipelines/manual/trigger", json!({}))
        .await;
    // The trigger now waits inside the client for the cooldown, on the manual clock.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while client.budget().cooldown_until().is_none() {
        assert!(std::time::Instant::now() < deadline, "no 429 seen");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let w = why(&api, "manual", None).await;
    assert_eq!(w["reason"], "request_budget", "{w}");
    assert!(
        sentence(&w).contains("429") && sentence(&w).contains("being triggered"),
        "{w}"
    );
    assert!(emulator.runs().is_empty());
    clock.set(clock.now() + chrono::Duration::seconds(130));
    handle.settled(clock.now()).await.unwrap();
    assert_eq!(emulator.runs().len(), 1, "sent after the cooldown");
    let w = why(&api, "manual", None).await;
    assert_ne!(w["reason"], "request_budget", "{w}");
    api.stop().await;
    daemon_stop.cancel();
    task.await.unwrap().unwrap();
    stop.cancel();
}
