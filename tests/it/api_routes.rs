//! Each route of the control API against a running daemon and the emulator on a manual clock:
//! what the API shows matches the emulator's record; actions change what dbt Cloud sees; errors
//! are JSON a person can act on; without the token nothing under /api/v1 answers.

use crate::support::api::{seg, Api, TOKEN};
use crate::support::daemon::{pipeline, Harness};
use crate::support::scenario::{scenario, BROKEN_JOB, HANGS_JOB, MARTS_JOB, STAGING_JOB};
use crate::support::t;
use baton::dbt_cloud::wire::RunStatus;
use serde_json::json;

fn scenario_yaml() -> String {
    scenario(&[STAGING_JOB, MARTS_JOB, BROKEN_JOB, HANGS_JOB])
}

fn chain() -> baton::model::pipeline::Pipeline {
    pipeline(
        r#"
name: chain
schedule: { cron: "0 2 * * *", timezone: UTC }
steps:
  staging: { job_id: 101 }
  marts:
    job_id: 102
    depends_on: [staging]
    overrides: { schema_override: "marts_{{ ds_nodash }}" }
"#,
    )
}

fn broken() -> baton::model::pipeline::Pipeline {
    pipeline(
        r#"
name: broken
steps:
  staging: { job_id: 101 }
  fails: { job_id: 105, depends_on: [staging] }
  after: { job_id: 102, depends_on: [fails] }
"#,
    )
}

fn hangs() -> baton::model::pipeline::Pipeline {
    pipeline(
        r#"
name: hangs
steps:
  long: { job_id: 106 }
"#,
    )
}

#[tokio::test]
async fn read_routes_show_what_the_emulator_recorded() {
    let h = Harness::start("2026-03-01T01:30:00Z", &scenario_yaml(), vec![chain()]).await;
    let api = Api::start(&h).await;
    let (status, list) = api.get("/api/v1/pipelines").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list[0]["name"], "chain");
    assert_eq!(list[0]["paused"], false);
    assert_eq!(list[0]["next_fire_times"][0], "2026-03-01T02:00:00Z");
    assert_eq!(list[0]["next_fire_times"][1], "2026-03-02T02:00:00Z");

    h.run_until(t("2026-03-01T02:20:00Z"), 30).await;
    let (status, p) = api.get("/api/v1/pipelines/chain").await;
    assert_eq!(status, 200, "{p}");
    assert_eq!(p["definition"]["steps"][1]["name"], "marts");
    assert_eq!(p["last_run"]["id"], "chain@2026-03-01T02:00:00Z");
    assert_eq!(p["last_run"]["state"], "succeeded");

    let (status, runs) = api.get("/api/v1/pipelines/chain/runs").await;
    assert_eq!(status, 200, "{runs}");
    let run = &runs[0];
    let marts = &run["steps"][1];
    let recorded = &h.runs_of(102)[0];
    assert_eq!(marts["name"], "marts");
    assert_eq!(marts["state"], "succeeded");
    assert_eq!(marts["attempts"][0]["dbt_run_id"], recorded.id.0);
    assert_eq!(marts["attempts"][0]["status"], RunStatus::Success.code());
    assert_eq!(recorded.status, RunStatus::Success);
    assert!(marts["attempts"][0]["href"]
        .as_str()
        .unwrap()
        .contains(&recorded.id.0.to_string()));
    assert_eq!(
        marts["attempts"][0]["request"]["schema_override"],
        "marts_20260301"
    );

    let (status, one) = api
        .get(&format!(
            "/api/v1/runs/{}",
            seg("chain@2026-03-01T02:00:00Z")
        ))
        .await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(
        one["steps"][0]["attempts"][0]["dbt_run_id"],
        h.runs_of(101)[0].id.0
    );

    let (status, health) = api.get_without_token("/healthz").await;
    assert_eq!((status, health["status"].as_str()), (200, Some("ok")));
    let (status, ready) = api.get_without_token("/readyz").await;
    assert_eq!(status, 200, "{ready}");

    let (status, body) = api.get("/api/v1/pipelines/chain/trigger").await;
    assert_eq!(status, 405, "{body}");
    assert!(body["error"].as_str().unwrap().contains("POST"), "{body}");
    let (status, body) = api.get("/api/v1/pipelines/chain/runs?limit=many").await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("limit"), "{body}");
    for (path, needle) in [
        ("/api/v1/pipelines/nope", "baton status"),
        ("/api/v1/runs/nope", "baton runs"),
        ("/api/v1/backfills/nope", "backfills"),
        ("/api/v2/whatever", "/api/v1"),
    ] {
        let (status, body) = api.get(path).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(needle),
            "{path}: {body}"
        );
    }
    api.stop().await;
    h.shutdown().await;
}

#[tokio::test]
async fn without_the_token_every_api_route_is_refused_with_401() {
    let h = Harness::start("2026-03-01T01:30:00Z", &scenario_yaml(), vec![chain()]).await;
    let api = Api::start(&h).await;
    let run = seg("chain@2026-03-01T02:00:00Z");
    for path in [
        "/api/v1/pipelines".to_string(),
        "/api/v1/pipelines/chain".into(),
        "/api/v1/pipelines/chain/runs".into(),
        "/api/v1/pipelines/chain/why".into(),
        format!("/api/v1/runs/{run}"),
        "/api/v1/backfills".into(),
    ] {
        let (status, body) = api.get_without_token(&path).await;
        assert_eq!(status, 401, "{path}: {body}");
        assert!(body["error"].as_str().unwrap().contains("Bearer"), "{body}");
    }
    for path in [
        "/api/v1/pipelines/chain/trigger".to_string(),
        "/api/v1/pipelines/chain/pause".into(),
        "/api/v1/pipelines/chain/resume".into(),
        "/api/v1/pipelines/chain/backfills".into(),
        format!("/api/v1/runs/{run}/cancel"),
        format!("/api/v1/runs/{run}/retry"),
        "/api/v1/backfills/bf-1/cancel".into(),
    ] {
        let (status, body) = api.post_without_token(&path).await;
        assert_eq!(status, 401, "{path}: {body}");
        let (status, _) = api.post_with_token(&path, "wrong-token").await;
        assert_eq!(status, 401, "{path} with a wrong token");
    }
    h.settle().await;
    assert!(
        h.emulator.runs().is_empty(),
        "a refused action reached dbt Cloud"
    );
    let paused = h
        .daemon
        .inspect(|e, _| e.state().cursors.values().any(|c| c.paused))
        .await
        .unwrap();
    assert!(!paused);
    api.stop().await;
    h.shutdown().await;
}

#[tokio::test]
async fn trigger_with_a_logical_date_renders_it_and_refuses_a_duplicate() {
    let h = Harness::start("2026-03-01T01:30:00Z", &scenario_yaml(), vec![chain()]).await;
    let api = Api::start(&h).await;
    let (status, body) = api
        .post(
            "/api/v1/pipelines/chain/trigger",
            json!({"logical_date": "2026-02-14"}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["run"]["id"], "chain@2026-02-14T00:00:00Z");
    assert_eq!(body["run"]["origin"]["kind"], "manual");
    h.run_for(600, 30).await;
    let marts = h.runs_of(102);
    assert_eq!(marts.len(), 1);
    assert_eq!(
        marts[0].request.schema_override.as_deref(),
        Some("marts_20260214")
    );

    let (status, body) = api
        .post(
            "/api/v1/pipelines/chain/trigger",
            json!({"logical_date": "2026-02-14T00:00:00Z"}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("exists already"),
        "{body}"
    );

    let (status, body) = api
        .post(
            "/api/v1/pipelines/chain/trigger",
            json!({"logical_date": "yesterday"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("2026-03-01"),
        "{body}"
    );

    // Without a date: now.
    let (status, body) = api.post("/api/v1/pipelines/chain/trigger", json!({})).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["run"]["id"], "chain@2026-03-01T01:40:00Z");
    api.stop().await;
    h.shutdown().await;
}

#[tokio::test]
async fn pause_stops_the_schedule_and_resume_restarts_it() {
    let h = Harness::start("2026-03-01T01:30:00Z", &scenario_yaml(), vec![chain()]).await;
    let api = Api::start(&h).await;
    h.settle().await;
    let (status, body) = api.post("/api/v1/pipelines/chain/pause", json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["paused"], true);
    h.run_until(t("2026-03-01T02:30:00Z"), 60).await;
    assert!(h.emulator.runs().is_empty(), "a paused pipeline ran");
    let (_, why) = api.get("/api/v1/pipelines/chain/why").await;
    assert_eq!(why["reason"], "paused", "{why}");
    let (status, body) = api.post("/api/v1/pipelines/chain/resume", json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["paused"], false);
    h.run_until(t("2026-03-02T02:01:00Z"), 600).await;
    assert_eq!(h.runs_of(101).len(), 1, "the next tick runs after resume");
    let (status, body) = api.post("/api/v1/pipelines/nope/pause", json!({})).await;
    assert_eq!(status, 404, "{body}");
    api.stop().await;
    h.shutdown().await;
}

#[tokio::test]
async fn cancel_cancels_the_dbt_cloud_run_and_confirms() {
    let h = Harness::start("2026-03-01T01:30:00Z", &scenario_yaml(), vec![hangs()]).await;
    let api = Api::start(&h).await;
    let (status, body) = api.post("/api/v1/pipelines/hangs/trigger", json!({})).await;
    assert_eq!(status, 202, "{body}");
    let id = body["run"]["id"].as_str().unwrap().to_string();
    h.run_for(120, 10).await;
    assert_eq!(h.runs_of(106)[0].status, RunStatus::Running);
    let (status, body) = api
        .post(&format!("/api/v1/runs/{}/cancel", seg(&id)), json!({}))
        .await;
    assert_eq!(status, 202, "{body}");
    h.run_for(60, 10).await;
    assert_eq!(h.runs_of(106)[0].status, RunStatus::Cancelled);
    let (_, run) = api.get(&format!("/api/v1/runs/{}", seg(&id))).await;
    assert_eq!(run["state"], "cancelled", "{run}");
    assert_eq!(run["cancel_reason"], "operator");
    assert_eq!(run["steps"][0]["attempts"][0]["status"], 30);
    let (status, body) = api
        .post(&format!("/api/v1/runs/{}/cancel", seg(&id)), json!({}))
        .await;
    assert_eq!(status, 409, "{body}");
    api.stop().await;
    h.shutdown().await;
}

#[tokio::test]
async fn retry_reruns_only_the_failed_steps_and_failure_details_are_shown() {
    let h = Harness::start("2026-03-01T01:30:00Z", &scenario_yaml(), vec![broken()]).await;
    let api = Api::start(&h).await;
    let (status, body) = api
        .post("/api/v1/pipelines/broken/trigger", json!({}))
        .await;
    assert_eq!(status, 202, "{body}");
    let id = body["run"]["id"].as_str().unwrap().to_string();
    h.run_for(600, 10).await;
    let (_, run) = api.get(&format!("/api/v1/runs/{}", seg(&id))).await;
    assert_eq!(run["state"], "failed", "{run}");
    assert_eq!(run["steps"][1]["state"], "failed");
    assert_eq!(run["steps"][2]["state"], "upstream_failed");
    // Why it failed: the failed model and its message, with the link to dbt Cloud.
    let details = &run["steps"][1]["attempts"][0]["details"];
    assert!(details.is_object(), "{run}");
    let first = &details["failures"][0];
    assert!(
        first["unique_id"].as_str().unwrap().starts_with("model."),
        "{details}"
    );
    assert_eq!(first["status"], "error", "{details}");
    assert!(
        first["message"]
            .as_str()
            .unwrap()
            .contains("Database Error"),
        "{details}"
    );
    assert!(details["failed_step"].as_str().is_some(), "{details}");
    let failure = run["failure"].as_str().unwrap();
    assert!(
        failure.contains("fails:") && failure.contains("error"),
        "{failure}"
    );
    assert!(run["failure_href"].as_str().is_some(), "{run}");

    let (status, body) = api
        .post(&format!("/api/v1/runs/{}/retry", seg(&id)), json!({}))
        .await;
    assert_eq!(status, 202, "{body}");
    h.run_for(600, 10).await;
    assert_eq!(
        h.runs_of(101).len(),
        1,
        "the succeeded step is not run again"
    );
    assert_eq!(h.runs_of(105).len(), 2, "the failed step runs again");
    let (status, body) = api
        .post(
            &format!("/api/v1/runs/{}/retry", seg("broken@2000-01-01T00:00:00Z")),
            json!({}),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    api.stop().await;
    h.shutdown().await;
}

#[test]
fn a_listener_off_loopback_needs_a_token() {
    let public: std::net::SocketAddr = "0.0.0.0:8377".parse().unwrap();
    let local: std::net::SocketAddr = "127.0.0.1:8377".parse().unwrap();
    let err = baton::http::check_listen(public, None).unwrap_err();
    assert!(err.contains("token_env"), "{err}");
    assert!(baton::http::check_listen(local, None).is_ok());
    let token = baton::secret::Secret::new(TOKEN);
    assert!(baton::http::check_listen(public, Some(&token)).is_ok());
}

#[tokio::test]
async fn readyz_says_when_dbt_cloud_is_not_reachable() {
    let h = Harness::start("2026-03-01T01:30:00Z", &scenario_yaml(), vec![chain()]).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", closed.local_addr().unwrap());
    drop(closed);
    let mut config = baton::dbt_cloud::client::ClientConfig::new(
        url.parse().unwrap(),
        h.emulator.account_id(),
        baton::secret::Secret::new("t"),
    );
    config.max_retries = 0;
    let unreachable = baton::dbt_cloud::client::DbtCloudClient::new(config).unwrap();
    let api = Api::serve(h.daemon.clone(), unreachable, Some(TOKEN)).await;
    let (status, body) = api.get_without_token("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("dbt Cloud is not reachable"),
        "{body}"
    );
    let (status, _) = api.get_without_token("/healthz").await;
    assert_eq!(status, 200);
    api.stop().await;
    h.shutdown().await;
}

/// `/readyz` takes any recent successful request of an account's client as that account
/// answering, and probes only accounts quiet for longer, each once: every configured account
/// counts, and an unreachable one is named.
#[tokio::test]
async fn readyz_reuses_recent_answers_and_checks_every_account() {
    use baton::ids::AccountName;
    let h = Harness::start("2026-03-01T01:30:00Z", &scenario_yaml(), vec![chain()]).await;
    let other = crate::support::dbt::Dbt::start().await;
    let probes = |emulator: &baton::emulator::EmulatorHandle| {
        emulator
            .request_counts()
            .iter()
            .filter(|((route, _), _)| route == "get_account")
            .map(|(_, n)| *n)
            .sum::<u64>()
    };
    let default_client = h.client();
    let b_client = other.client();
    // Account b's client has just been answered (any request counts): readiness does not ask.
    b_client
        .list_runs_page(&baton::dbt_cloud::client::ListRuns::default())
        .await
        .unwrap();
    let state = baton::http::AppState::new(h.daemon.clone(), None, Some(default_client))
        .with_accounts([(AccountName("b".into()), b_client)]);
    let api = Api::serve_state(state, None).await;
    let (status, body) = api.get_without_token("/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        probes(&h.emulator),
        1,
        "the quiet default account is probed"
    );
    assert_eq!(
        probes(&other.handle),
        0,
        "account b answered lately: no probe"
    );
    for _ in 0..3 {
        let (status, body) = api.get_without_token("/readyz").await;
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(probes(&h.emulator), 1, "the probe's own answer is reused");
    assert_eq!(probes(&other.handle), 0);
    api.stop().await;

    // An account that cannot be reached makes the daemon unready, and is named.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", closed.local_addr().unwrap());
    drop(closed);
    let mut config = baton::dbt_cloud::client::ClientConfig::new(
        url.parse().unwrap(),
        other.handle.account_id(),
        baton::secret::Secret::new("t"),
    );
    config.max_retries = 0;
    let unreachable = baton::dbt_cloud::client::DbtCloudClient::new(config).unwrap();
    let state = baton::http::AppState::new(h.daemon.clone(), None, Some(h.client()))
        .with_accounts([(AccountName("b".into()), unreachable)]);
    let api = Api::serve_state(state, None).await;
    let (status, body) = api.get_without_token("/readyz").await;
    assert_eq!(status, 503, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("dbt Cloud is not reachable") && error.contains("account `b`"),
        "{body}"
    );
    assert!(
        !error.contains("default"),
        "the default account answered: {body}"
    );
    api.stop().await;
    h.shutdown().await;
}
