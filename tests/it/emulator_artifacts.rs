//! Artifacts and steps over real HTTP: 404 until the run ends, run_results.json consistent with
//! the outcome, `step` selection, paths with slashes, `steps/{id}/` and `include_related=run_steps`.

#![allow(clippy::unwrap_used)]

use crate::support::emulator::Harness;
use serde_json::{json, Value};

#[tokio::test]
async fn run_results_appear_when_the_run_ends_and_match_its_outcome() {
    let h = Harness::start().await;
    let ok = h.trigger(100, json!({"cause": "ok"})).await;
    let broken = h.trigger(200, json!({"cause": "broken"})).await;
    h.advance(3);
    let (status, body) = h
        .get(&format!("runs/{ok}/artifacts/run_results.json"))
        .await;
    assert_eq!(status, 404, "not before the run ends");
    assert_eq!(body["status"]["code"], 404);
    let (_, listed) = h.get(&format!("runs/{ok}/artifacts/")).await;
    assert_eq!(listed["data"], json!([]));

    h.advance(20);
    let (_, listed) = h.get(&format!("runs/{ok}/artifacts/")).await;
    let paths: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(paths.contains(&"manifest.json") && paths.contains(&"run_results.json"));
    assert!(paths.contains(&"run/analytics/models/model_1.sql"));
    let (status, results) = h
        .get(&format!("runs/{ok}/artifacts/run_results.json"))
        .await;
    assert_eq!(status, 200);
    assert!(results.get("status").is_none(), "raw file, no envelope");
    let statuses: Vec<&str> = results["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["success"; 4]);
    assert_eq!(
        results["metadata"]["env"]["DBT_CLOUD_RUN_ID"],
        ok.to_string()
    );
    let (status, sql) = h
        .get(&format!(
            "runs/{ok}/artifacts/run/analytics/models/model_2.sql"
        ))
        .await;
    assert_eq!(status, 200);
    assert!(sql.as_str().unwrap().starts_with("select"));
    let (status, manifest) = h.get(&format!("runs/{ok}/artifacts/manifest.json")).await;
    assert_eq!(status, 200);
    assert_eq!(manifest["nodes"].as_object().unwrap().len(), 4);

    // Job 200 fails at step 5 ("dbt run"): step 4 ("dbt seed") succeeded, step 5 has an error.
    let (_, results) = h
        .get(&format!("runs/{broken}/artifacts/run_results.json"))
        .await;
    let statuses: Vec<&str> = results["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["success", "success", "error", "skipped", "skipped"]
    );
    let (_, seed) = h
        .get(&format!("runs/{broken}/artifacts/run_results.json?step=4"))
        .await;
    assert!(seed["results"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["status"] == "success"));
    assert_eq!(
        h.get(&format!("runs/{broken}/artifacts/run_results.json?step=2"))
            .await
            .0,
        404,
        "no dbt in setup steps"
    );
    assert_eq!(
        h.get(&format!("runs/{broken}/artifacts/run_results.json?step=6"))
            .await
            .0,
        404,
        "never ran"
    );
    assert_eq!(
        h.get(&format!("runs/{ok}/artifacts/catalog.json")).await.0,
        404
    );
}

#[tokio::test]
async fn steps_are_listed_with_the_run_and_fetched_by_id() {
    let h = Harness::start().await;
    let broken = h.trigger(200, json!({"cause": "broken"})).await;
    h.advance(30);
    let (_, run) = h
        .get(&format!("runs/{broken}/?include_related=run_steps,trigger"))
        .await;
    let steps = run["data"]["run_steps"].as_array().unwrap();
    let summary: Vec<(i64, &str)> = steps
        .iter()
        .map(|s| {
            (
                s["index"].as_i64().unwrap(),
                s["status_humanized"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (1, "Success"),
            (2, "Success"),
            (3, "Success"),
            (4, "Success"),
            (5, "Error")
        ]
    );
    assert_eq!(steps[4]["name"], "Invoke dbt with `dbt run`");
    assert!(steps[4]["logs"].as_str().unwrap().contains("ERROR=1"));
    assert!(steps[0]["created_at"].as_str().unwrap().contains(' '));
    let step_id = steps[4]["id"].as_i64().unwrap();
    let (status, step): (u16, Value) = h.get(&format!("steps/{step_id}")).await;
    assert_eq!(status, 200);
    assert_eq!(step["data"]["status"], 20);
    assert_eq!(step["data"]["run_id"], broken);
    assert_eq!(
        h.get(&format!("steps/{}/", step_id + 1)).await.0,
        404,
        "step 6 never ran"
    );
}
