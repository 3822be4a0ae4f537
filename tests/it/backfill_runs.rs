//! Backfills against the emulator on a manual clock: a 14-day backfill under `max_active 3` never
//! has more than 3 of its pipeline runs active, triggers each date once with that date's rendered
//! schema, runs beside the regular schedule and survives a daemon restart in the middle; dry runs
//! start nothing; `reprocess` decides about dates that already ran; a backfill cancels as a whole.

#![allow(clippy::unwrap_used)]

use crate::support::api::Api;
use crate::support::daemon::{pipeline, Harness};
use crate::support::scenario::{scenario, HANGS_JOB, MARTS_JOB, STAGING_JOB};
use crate::support::t;
use baton::engine::state::{PipelineRunState, RunOrigin};
use serde_json::json;
use std::collections::BTreeMap;

fn scenario_yaml() -> String {
    scenario(&[STAGING_JOB, MARTS_JOB, HANGS_JOB])
}

fn daily() -> baton::model::pipeline::Pipeline {
    pipeline(
        r#"
name: daily
schedule: { cron: "0 2 * * *", timezone: UTC }
steps:
  staging:
    job_id: 101
    overrides: { schema_override: "backfill_{{ ds_nodash }}" }
  marts:
    job_id: 102
    depends_on: [staging]
    overrides: { schema_override: "backfill_{{ ds_nodash }}" }
"#,
    )
}

/// Active pipeline runs of one backfill, as the engine sees them.
async fn active_of(h: &Harness, backfill: &str) -> usize {
    let backfill = backfill.to_string();
    h.daemon
        .inspect(move |e, _| {
            e.state()
                .runs
                .values()
                .filter(|r| {
                    r.origin
                        == RunOrigin::Backfill {
                            backfill: backfill.clone(),
                        }
                })
                .filter(|r| !r.state.is_terminal())
                .count()
        })
        .await
        .unwrap()
}

async fn backfill_state(h: &Harness, id: &str) -> String {
    let id = baton::engine::backfill::BackfillId(id.to_string());
    h.daemon
        .inspect(move |e, _| {
            e.state()
                .backfills
                .get(&id)
                .map(|b| format!("{:?}", b.state).to_lowercase())
                .unwrap_or_default()
        })
        .await
        .unwrap()
}

/// Steps time by `step` seconds until the backfill ends, checking the limit at every step.
async fn run_backfill(
    h: &Harness,
    id: &str,
    limit: usize,
    until: chrono::DateTime<chrono::Utc>,
) -> usize {
    let mut most = 0;
    h.settle().await;
    while h.now() < until {
        let active = active_of(h, id).await;
        assert!(
            active <= limit,
            "{active} runs of the backfill active, limit {limit}"
        );
        most = most.max(active);
        if backfill_state(h, id).await != "running" {
            break;
        }
        let next = h.now() + chrono::Duration::seconds(20);
        h.clock.set(next);
        h.settle().await;
    }
    most
}

#[tokio::test]
async fn fourteen_days_under_max_active_three_survive_a_restart_and_render_each_date() {
    let mut h = Harness::start("2026-03-20T01:30:00Z", &scenario_yaml(), vec![daily()]).await;
    let api = Api::start(&h).await;
    let (status, created) = api
        .post(
            "/api/v1/pipelines/daily/backfills",
            json!({"from": "2026-03-01", "to": "2026-03-14", "max_active": 3}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["counts"]["dates"], 14);
    assert_eq!(created["dates"][0]["logical_date"], "2026-03-01T02:00:00Z");
    assert_eq!(created["dates"][13]["logical_date"], "2026-03-14T02:00:00Z");

    // Half-way through, the daemon stops and a new one takes over the same state directory.
    let most_before = run_backfill(&h, &id, 3, t("2026-03-20T02:10:00Z")).await;
    assert_eq!(most_before, 3, "the backfill uses its limit");
    let done_before = h.runs_of(102).len();
    assert!(done_before > 0 && done_before < 14, "{done_before}");
    api.stop().await;
    h.restart(None).await;
    let api = Api::start(&h).await;
    let (_, view) = api.get(&format!("/api/v1/backfills/{id}")).await;
    assert_eq!(view["state"], "running", "{view}");
    run_backfill(&h, &id, 3, t("2026-03-21T00:00:00Z")).await;

    let (_, view) = api.get(&format!("/api/v1/backfills/{id}")).await;
    assert_eq!(view["state"], "succeeded", "{view}");
    assert_eq!(view["counts"]["succeeded"], 14, "{view}");

    // Each date triggered once per job, with its own schema; the regular tick ran beside it.
    for job in [101, 102] {
        let mut per_schema: BTreeMap<String, usize> = BTreeMap::new();
        for run in h.runs_of(job) {
            *per_schema
                .entry(run.request.schema_override.clone().unwrap())
                .or_default() += 1;
        }
        for day in 1..=14 {
            let schema = format!("backfill_202603{day:02}");
            assert_eq!(
                per_schema.get(&schema),
                Some(&1),
                "job {job} {schema}: {per_schema:?}"
            );
        }
        assert_eq!(
            per_schema.get("backfill_20260320"),
            Some(&1),
            "the regular run"
        );
        assert_eq!(per_schema.len(), 15, "{per_schema:?}");
    }
    let regular = h.pipeline_run("daily@2026-03-20T02:00:00Z").await;
    assert_eq!(regular.state, PipelineRunState::Succeeded);
    assert_eq!(regular.origin, RunOrigin::Schedule);
    let one = h.pipeline_run("daily@2026-03-05T02:00:00Z").await;
    assert_eq!(
        one.origin,
        RunOrigin::Backfill {
            backfill: id.clone()
        }
    );

    // Reprocess: `none` skips the dates that ran, `all` runs them again under distinct ids.
    let (status, body) = api
        .post(
            "/api/v1/pipelines/daily/backfills",
            json!({"from": "2026-03-01", "to": "2026-03-02", "max_active": 2, "dry_run": true}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["dates"][0]["skipped"]
            .as_str()
            .unwrap()
            .contains("already ran"),
        "{body}"
    );
    let (status, body) = api
        .post(
            "/api/v1/pipelines/daily/backfills",
            json!({"from": "2026-03-01", "to": "2026-03-02", "max_active": 2, "reprocess": "all"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let again = body["id"].as_str().unwrap().to_string();
    let run = body["dates"][0]["run"].as_str().unwrap();
    assert_eq!(run, format!("daily@2026-03-01T02:00:00Z#{again}"));
    run_backfill(&h, &again, 2, t("2026-03-22T00:00:00Z")).await;
    assert_eq!(backfill_state(&h, &again).await, "succeeded");
    let twice = h
        .runs_of(102)
        .into_iter()
        .filter(|r| r.request.schema_override.as_deref() == Some("backfill_20260301"))
        .count();
    assert_eq!(twice, 2);
    api.stop().await;
    h.shutdown().await;
}

#[tokio::test]
async fn a_dry_run_renders_each_date_and_starts_nothing() {
    let h = Harness::start("2026-03-20T10:00:00Z", &scenario_yaml(), vec![daily()]).await;
    let api = Api::start(&h).await;
    let (status, body) = api
        .post(
            "/api/v1/pipelines/daily/backfills",
            json!({"from": "2026-03-01", "to": "2026-03-03", "every": "12h", "dry_run": true}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let dates = body["dates"].as_array().unwrap();
    // Every 12h from the day's start through the end of the 3rd: 6 dates.
    assert_eq!(dates.len(), 6, "{body}");
    assert_eq!(dates[1]["logical_date"], "2026-03-01T12:00:00Z");
    let trigger = &dates[2]["triggers"][1];
    assert_eq!(trigger["step"], "marts");
    assert_eq!(trigger["body"]["schema_override"], "backfill_20260302");
    assert!(trigger["body"]["cause"].as_str().unwrap().contains("[bt-"));
    h.run_for(600, 60).await;
    assert!(h.emulator.runs().is_empty(), "a dry run started something");
    let (_, list) = api.get("/api/v1/backfills").await;
    assert_eq!(list.as_array().unwrap().len(), 0);

    for (request, needle) in [
        (json!({"from": "2026-03-03", "to": "2026-03-01"}), "after"),
        (json!({"from": "2026-03-01"}), "`from` and `to`"),
        (
            json!({"from": "2026-03-01", "to": "2026-03-02", "max_active": 0}),
            "max_active",
        ),
        (json!({"from": "March", "to": "2026-03-02"}), "not a date"),
        (
            json!({"from": "2026-03-01", "to": "2026-03-02", "every": "soon"}),
            "every",
        ),
    ] {
        let (status, body) = api.post("/api/v1/pipelines/daily/backfills", request).await;
        assert_eq!(status, 400, "{body}");
        assert!(body["error"].as_str().unwrap().contains(needle), "{body}");
    }
    api.stop().await;
    h.shutdown().await;
}

#[tokio::test]
async fn cancelling_a_backfill_cancels_its_runs_and_starts_no_more() {
    let hangs = pipeline(
        r#"
name: hangs
steps:
  long: { job_id: 106 }
"#,
    );
    let h = Harness::start("2026-03-20T10:00:00Z", &scenario_yaml(), vec![hangs]).await;
    let api = Api::start(&h).await;
    let (status, body) = api
        .post(
            "/api/v1/pipelines/hangs/backfills",
            json!({"from": "2026-03-01", "to": "2026-03-05", "every": "1d", "max_active": 1}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    h.run_for(120, 10).await;
    assert_eq!(h.runs_of(106).len(), 1);
    let (status, body) = api
        .post(&format!("/api/v1/backfills/{id}/cancel"), json!({}))
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["state"], "cancelled");
    h.run_for(300, 10).await;
    assert_eq!(h.runs_of(106).len(), 1, "no date starts after the cancel");
    assert_eq!(
        h.runs_of(106)[0].status.code(),
        30,
        "the dbt Cloud run is cancelled"
    );
    let (_, view) = api.get(&format!("/api/v1/backfills/{id}")).await;
    assert_eq!(view["counts"]["failed"], 1, "{view}");
    assert_eq!(view["counts"]["not_started"], 4, "{view}");
    let (status, _) = api
        .post(&format!("/api/v1/backfills/{id}/cancel"), json!({}))
        .await;
    assert_eq!(status, 409);
    api.stop().await;
    h.shutdown().await;
}

#[tokio::test]
async fn a_backfill_run_queued_behind_its_siblings_does_not_hit_queue_timeout() {
    let strict = pipeline(
        r#"
name: strict
defaults: { queue_timeout: 2m }
steps:
  staging: { job_id: 101 }
"#,
    );
    let h = Harness::start("2026-03-20T10:00:00Z", &scenario_yaml(), vec![strict]).await;
    let api = Api::start(&h).await;
    let (status, body) = api
        .post(
            "/api/v1/pipelines/strict/backfills",
            json!({"from": "2026-03-01", "to": "2026-03-03", "every": "1d", "max_active": 3}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    run_backfill(&h, &id, 3, t("2026-03-20T11:00:00Z")).await;
    assert_eq!(backfill_state(&h, &id).await, "succeeded");
    let runs = h.runs_of(101);
    assert_eq!(runs.len(), 3, "each date once, none cancelled and re-run");
    assert!(runs.iter().all(|r| r.status.code() == 10));
    api.stop().await;
    h.shutdown().await;
}
