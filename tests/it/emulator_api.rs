//! The emulator's API surface over real HTTP: list-runs filters and pagination, include_related
//! spellings, auth and account errors, 400s, jobs, steps, artifacts.

#![allow(clippy::unwrap_used)]

use crate::support::emulator::{Harness, ACCOUNT, TOKEN};
use serde_json::{json, Value};

fn ids(answer: &Value) -> Vec<i64> {
    answer["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn list_runs_filters_orders_and_paginates() {
    let h = Harness::start().await;
    let a = h.trigger(100, json!({"cause": "a"})).await;
    let b = h.trigger(500, json!({"cause": "b"})).await;
    let c = h.trigger(100, json!({"cause": "c"})).await;
    h.advance(3);

    let (status, all) = h.get("runs/").await;
    assert_eq!(status, 200);
    assert_eq!(ids(&all), vec![a, b, c], "ascending id by default");
    assert_eq!(all["extra"]["order_by"], "id");
    assert_eq!(
        all["extra"]["pagination"],
        json!({"count": 3, "total_count": 3})
    );
    assert_eq!(
        all["extra"]["filters"],
        json!({"limit": 100, "offset": 0, "state": "all", "account_id": ACCOUNT})
    );

    let (_, page) = h.get("runs/?order_by=-id&limit=2&offset=1").await;
    assert_eq!(ids(&page), vec![b, a]);
    assert_eq!(
        page["extra"]["pagination"],
        json!({"count": 2, "total_count": 3})
    );
    assert_eq!(page["extra"]["order_by"], "-id");

    let (_, by_job) = h.get("runs?job_definition_id=100").await;
    assert_eq!(ids(&by_job), vec![a, c]);
    assert_eq!(by_job["extra"]["filters"]["job_definition_id"], 100);

    for spelling in [
        format!("pk__in=[{a},{c}]"),
        format!("pk__in={a},{c}"),
        format!("pk__in={a}&pk__in={c}"),
        format!("pk__in[]={a}&pk__in[]={c}"),
    ] {
        let (_, batch) = h.get(&format!("runs/?{spelling}")).await;
        assert_eq!(ids(&batch), vec![a, c], "{spelling}");
    }
    let (_, running) = h.get("runs/?status__in=[1,2,3]&status=3").await;
    assert_eq!(ids(&running), vec![a, b]);
    let (_, newer) = h.get(&format!("runs/?id__gt={a}")).await;
    assert_eq!(ids(&newer), vec![b, c]);

    let (_, with_trigger) = h
        .get(&format!(
            "runs/?pk__in=[{a}]&include_related=%5B%22trigger%22%5D"
        ))
        .await;
    assert_eq!(with_trigger["data"][0]["trigger"]["cause"], "a");
    assert!(with_trigger["data"][0]["job"].is_null());
    let (_, both) = h
        .get(&format!("runs/{a}/?include_related=['trigger', 'job']"))
        .await;
    assert_eq!(both["data"]["trigger"]["cause"], "a");
    assert_eq!(both["data"]["job"]["name"], "ok");

    h.advance(9); // a and b finished at +7s, c (after a) finishes at +13s
    let (_, finished) = h
        .get("runs/?finished_at__range=[\"2026-03-02T08:00:00Z\",\"2026-03-02T09:00:00Z\"]&order_by=-finished_at")
        .await;
    assert_eq!(ids(&finished), vec![b, a]);
}

#[tokio::test]
async fn bad_filters_answer_400_with_the_field_in_data() {
    let h = Harness::start().await;
    let (status, answer) = h.get("runs/?limit=101").await;
    assert_eq!(status, 400);
    assert_eq!(answer["status"]["is_success"], false);
    assert!(answer["data"]["limit"].is_string());
    let (status, answer) = h
        .get("runs/?status__in=DbtCloudJobRunStatus.NON_TERMINAL_STATUSES")
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        answer["data"]["status__in"],
        "'DbtCloudJobRunStatus.NON_TERMINAL_STATUSES' is not valid under any of the given schemas"
    );
    assert_eq!(
        answer["status"]["user_message"],
        "The request was invalid. Please double check the provided data and try again."
    );
}

#[tokio::test]
async fn cause_is_required_and_limited_to_255_characters() {
    let h = Harness::start().await;
    let (status, answer) = h.post("jobs/100/run/", json!({})).await;
    assert_eq!(status, 400);
    assert!(answer["data"]["cause"].is_string());
    let (status, _) = h.post("jobs/100/run/", json!({"cause": ""})).await;
    assert_eq!(status, 400);
    let (status, _) = h
        .post("jobs/100/run/", json!({"cause": "x".repeat(256)}))
        .await;
    assert_eq!(status, 400);
    let (status, _) = h
        .post("jobs/100/run/", json!({"cause": "é".repeat(255)}))
        .await;
    assert_eq!(status, 200, "255 characters, more bytes, is fine");
    let (status, answer) = h.post("jobs/999/run/", json!({"cause": "x"})).await;
    assert_eq!(status, 404);
    assert_eq!(
        answer["status"]["user_message"],
        "The requested resource was not found. Please check that you have the proper permissions."
    );
    assert!(h.handle.runs().len() == 1);
}

#[tokio::test]
async fn tokens_and_accounts_are_checked_as_dbt_cloud_does() {
    let h = Harness::start().await;
    let base = h.handle.base_url();
    let client = &h.client;
    let answer = client
        .get(format!("{base}/api/v2/accounts/{ACCOUNT}/runs/"))
        .header("Authorization", "Token wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 401);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(
        body,
        json!({"status": {"code": 401, "is_success": false, "user_message": "Invalid token.", "developer_message": null}, "data": null})
    );
    let answer = client
        .get(format!("{base}/api/v2/accounts/{ACCOUNT}/runs/"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 401);
    for scheme in ["Token", "Bearer", "token"] {
        let answer = client
            .get(format!("{base}/api/v2/accounts/{ACCOUNT}/jobs"))
            .header("Authorization", format!("{scheme} {TOKEN}"))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200, "{scheme}");
    }
    let answer = client
        .get(format!("{base}/api/v2/accounts/12345/runs/"))
        .header("Authorization", format!("Token {TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 403);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(
        body["status"]["user_message"],
        "Access denied: Token is not scoped to account."
    );
    let counts = h.handle.request_counts();
    assert_eq!(counts[&("list_runs".to_string(), 401)], 2);
    assert_eq!(counts[&("list_runs".to_string(), 403)], 1);
    assert_eq!(counts[&("list_jobs".to_string(), 200)], 3);
}

#[tokio::test]
async fn jobs_are_listed_and_fetched_with_job_timestamps() {
    let h = Harness::start().await;
    let (status, jobs) = h.get("jobs/?limit=2&offset=1").await;
    assert_eq!(status, 200);
    assert_eq!(ids(&jobs), vec![200, 300]);
    assert_eq!(
        jobs["extra"]["pagination"],
        json!({"count": 2, "total_count": 5})
    );
    assert_eq!(jobs["extra"]["filters"]["state"], "active");
    let (status, job) = h.get("jobs/300").await;
    assert_eq!(status, 200);
    assert_eq!(job["data"]["execution"]["timeout_seconds"], 60);
    assert!(job["data"]["created_at"].as_str().unwrap().contains('T'));
    let (status, _) = h.get("jobs/301/").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn odd_inputs_get_answers_not_crashes() {
    let h = Harness::start().await;
    // A short git sha, a timeout far beyond any clock, steps of its own.
    let id = h
        .trigger(
            100,
            json!({"cause": "odd", "git_sha": "abc", "timeout_seconds_override": i64::MAX, "steps_override": ["dbt run -s a"]}),
        )
        .await;
    h.advance(30);
    let run = h.run(id).await;
    assert_eq!(run["status"], 10);
    assert_eq!(run["git_sha"], "abc");
    let (status, _) = h
        .get(&format!("runs/{id}/artifacts/run_results.json"))
        .await;
    assert_eq!(status, 200);
    let (_, with_steps) = h
        .get(&format!("runs/{id}/?include_related=run_steps"))
        .await;
    assert_eq!(
        with_steps["data"]["run_steps"][3]["name"],
        "Invoke dbt with `dbt run -s a`"
    );

    let too_many: Vec<String> = (0..51).map(|i| format!("dbt run -s m{i}")).collect();
    let (status, answer) = h
        .post(
            "jobs/100/run/",
            json!({"cause": "x", "steps_override": too_many}),
        )
        .await;
    assert_eq!(status, 400);
    assert!(answer["data"]["steps_override"].is_string());
    let (status, _) = h
        .post(
            "jobs/100/run/",
            json!({"cause": "x", "threads_override": "eight"}),
        )
        .await;
    assert_eq!(status, 400);
    let (status, _) = h
        .post("jobs/100/run/", json!(["not", "an", "object"]))
        .await;
    assert_eq!(status, 400);
    assert_eq!(h.get(&format!("steps/{}/", i64::MIN)).await.0, 404);
    assert_eq!(h.get("runs/?created_at__range=[yesterday]").await.0, 400);
    assert_eq!(h.get("runs/?order_by=status").await.0, 400);
    assert_eq!(h.get("runs/?limit=0").await.0, 400);
    let (status, _) = h.get("runs/?offset=999999999&limit=1").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn cancelling_the_shutdown_token_stops_the_server() {
    let h = Harness::start().await;
    assert_eq!(h.get("jobs/").await.0, 200);
    h.shutdown.cancel();
    h.handle.stopped().await;
    let refused = reqwest::Client::new()
        .get(h.url("jobs/"))
        .header("Authorization", format!("Token {TOKEN}"))
        .send()
        .await;
    assert!(refused.is_err(), "nothing listens any more");
}

#[tokio::test]
async fn the_account_is_listed_and_fetched() {
    let h = Harness::start().await;
    let (status, account) = h.get("").await;
    assert_eq!(status, 200);
    assert_eq!(account["data"]["id"], ACCOUNT);
    let listed: Value = h
        .client
        .get(format!("{}/api/v2/accounts/", h.handle.base_url()))
        .header("Authorization", format!("Token {TOKEN}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["data"][0]["id"], ACCOUNT);
    assert_eq!(listed["extra"]["pagination"]["total_count"], 1);
}
