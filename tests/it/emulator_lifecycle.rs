//! The emulator's run lifecycle over real HTTP, driven by a manual clock: statuses and timestamps,
//! one run per job at a time, the slot limit, timeouts, cancels, reruns from failure.

#![allow(clippy::unwrap_used)]

use crate::support::emulator;
use crate::support::emulator::Harness;
use serde_json::json;

#[tokio::test]
async fn a_run_goes_queued_starting_running_success_at_the_scenario_times() {
    let h = Harness::start().await;
    let (status, answer) = h
        .post("jobs/100/run/", json!({"cause": "nightly 2026-03-02"}))
        .await;
    assert_eq!(status, 200);
    let run = &answer["data"];
    let id = run["id"].as_i64().unwrap();
    assert!(id > 1 << 32);
    assert_eq!(run["status"], 1);
    assert_eq!(run["status_humanized"], "Queued");
    assert_eq!(run["in_progress"], true);
    assert_eq!(run["trigger"]["cause"], "nightly 2026-03-02");
    assert_eq!(run["job"]["id"], 100);
    assert!(run["dequeued_at"].is_null() && run["git_sha"].is_null());
    assert_eq!(run["created_at"], "2026-03-02 08:00:00.250000+00:00");

    h.advance(1);
    let run = h.run(id).await;
    assert_eq!(run["status"], 2);
    assert_eq!(run["dequeued_at"], "2026-03-02 08:00:01.250000+00:00");
    assert!(run["started_at"].is_null());

    h.advance(1);
    let run = h.run(id).await;
    assert_eq!(run["status"], 3);
    assert_eq!(run["started_at"], "2026-03-02 08:00:02.250000+00:00");
    assert_eq!(run["git_sha"].as_str().unwrap().len(), 40);
    assert_eq!(run["artifacts_saved"], false);
    assert!(
        run["trigger"].is_null(),
        "trigger only with include_related"
    );

    h.advance(4);
    assert_eq!(h.status(id).await, 3);
    h.advance(1);
    let run = h.run(id).await;
    assert_eq!(run["status"], 10);
    assert_eq!(run["is_success"], true);
    assert_eq!(run["in_progress"], false);
    assert_eq!(run["finished_at"], "2026-03-02 08:00:07.250000+00:00");
    assert_eq!(run["artifacts_saved"], true);
    assert_eq!(run["duration"], "00:00:07");
    assert_eq!(run["queued_duration"], "00:00:02");
    assert_eq!(run["run_duration"], "00:00:05");
    assert_eq!(run["run_duration_humanized"], "5 seconds");
    assert_eq!(run["can_retry"], false);
    assert_eq!(run["retry_not_supported_reason"], "RETRY_NOT_FAILED_RUN");
    assert_eq!(
        h.handle.runs()[0].status,
        baton::dbt_cloud::wire::RunStatus::Success
    );
}

#[tokio::test]
async fn runs_of_one_job_wait_in_the_queue_blocked_by_the_earlier_one() {
    let h = Harness::start().await;
    let first = h.trigger(100, json!({"cause": "a"})).await;
    let second = h.trigger(100, json!({"cause": "b"})).await;
    let other = h.trigger(500, json!({"cause": "c"})).await;
    let run = h.run(second).await;
    assert_eq!(run["blocked_by"], json!([first]));
    assert_eq!(h.run(other).await["blocked_by"], json!([]));
    h.advance(2);
    assert_eq!(h.status(first).await, 3);
    assert_eq!(h.status(other).await, 3);
    assert_eq!(h.status(second).await, 1);
    h.advance(5); // first ends at +7s
    assert_eq!(h.status(first).await, 10);
    let run = h.run(second).await;
    assert_eq!(
        run["status"], 2,
        "its queue delay has passed: dequeued as soon as unblocked"
    );
    assert_eq!(run["blocked_by"], json!([]));
    assert_eq!(run["dequeued_at"], h.run(first).await["finished_at"]);
    h.advance(1);
    assert_eq!(h.status(second).await, 3);
    h.advance(5);
    assert_eq!(h.status(second).await, 10);
}

#[tokio::test]
async fn the_account_run_slot_limit_holds_runs_of_other_jobs_in_the_queue() {
    let yaml = emulator::scenario_yaml().replace("seed: 7", "seed: 7\nrun_slots: 1");
    let h = Harness::start_with(&yaml).await;
    let a = h.trigger(100, json!({"cause": "a"})).await;
    let b = h.trigger(500, json!({"cause": "b"})).await;
    h.advance(3);
    assert_eq!(h.status(a).await, 3);
    assert_eq!(h.status(b).await, 1);
    h.advance(4);
    assert_eq!(h.status(a).await, 10);
    h.advance(2);
    assert_eq!(h.status(b).await, 3);
}

#[tokio::test]
async fn a_timeout_ends_the_run_as_cancelled_with_the_real_message() {
    let h = Harness::start().await;
    let job_timeout = h.trigger(300, json!({"cause": "job timeout"})).await;
    h.advance(2 + 60);
    let run = h.run(job_timeout).await;
    assert_eq!(run["status"], 30);
    assert_eq!(run["is_cancelled"], true);
    assert_eq!(
        run["status_message"],
        "This run timed out after running for 1 minute, which exceeded the configured timeout of 60 seconds."
    );
    let overridden = h
        .trigger(100, json!({"cause": "x", "timeout_seconds_override": 3}))
        .await;
    h.advance(2 + 3);
    let run = h.run(overridden).await;
    assert_eq!(run["status"], 30);
    assert!(run["status_message"]
        .as_str()
        .unwrap()
        .contains("timeout of 3 seconds"));
}

#[tokio::test]
async fn cancelling_a_queued_run_returns_it_cancelled_and_a_running_one_ends_later() {
    let h = Harness::start().await;
    let running = h.trigger(100, json!({"cause": "a"})).await;
    let queued = h.trigger(100, json!({"cause": "b"})).await;
    let (status, answer) = h.post(&format!("runs/{queued}/cancel/"), json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(answer["data"]["status"], 30);
    assert_eq!(answer["data"]["status_message"], "Cancelled by user.");
    assert!(answer["data"]["started_at"].is_null());
    assert!(answer["data"]["dequeued_at"].is_null());

    h.advance(3);
    let (_, answer) = h.post(&format!("runs/{running}/cancel/"), json!({})).await;
    assert_eq!(
        answer["data"]["status"], 3,
        "a running run takes the cancel_delay to stop"
    );
    h.advance(2);
    let run = h.run(running).await;
    assert_eq!(run["status"], 30);
    assert_eq!(run["status_message"], "Cancelled by user.");
    let (status, _) = h.post("runs/1/cancel/", json!({})).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn rerun_resumes_from_the_failed_step_only_when_the_latest_run_failed() {
    let h = Harness::start().await;
    let failed = h
        .trigger(200, json!({"cause": "attempt 1", "threads_override": 8}))
        .await;
    h.advance(2 + 12);
    let run = h.run(failed).await;
    assert_eq!(run["status"], 20);
    assert_eq!(run["can_retry"], true);
    assert!(run["retry_not_supported_reason"].is_null());
    let (status, details) = h.get(&format!("runs/{failed}/retry/")).await;
    assert_eq!(status, 200);
    assert_eq!(details["data"]["failed_step"], "Invoke dbt with `dbt run`");
    assert_eq!(
        details["data"]["skipped_steps"],
        json!(["Invoke dbt with `dbt test`"])
    );

    let (status, answer) = h.post("jobs/200/rerun/", json!({})).await;
    assert_eq!(status, 200);
    let rerun = answer["data"]["id"].as_i64().unwrap();
    let recorded = h.handle.runs();
    let record = recorded.iter().find(|r| r.id.0 == rerun).unwrap();
    assert!(record.via_rerun);
    assert_eq!(record.resumed_from.map(|r| r.0), Some(failed));
    assert_eq!(record.request.threads_override, Some(8));
    assert_eq!(
        h.run(failed).await["can_retry"],
        false,
        "no longer the latest run"
    );

    // Job 400 fails once, then succeeds: a rerun of a successful latest run is a full run.
    let first = h.trigger(400, json!({"cause": "x"})).await;
    h.advance(30);
    assert_eq!(h.status(first).await, 20);
    let (_, answer) = h.post("jobs/400/rerun/", json!({})).await;
    let second = answer["data"]["id"].as_i64().unwrap();
    h.advance(30);
    assert_eq!(h.status(second).await, 10);
    let (_, answer) = h.post("jobs/400/rerun/", json!({})).await;
    let third = answer["data"]["id"].as_i64().unwrap();
    let runs = h.handle.runs();
    let third = runs.iter().find(|r| r.id.0 == third).unwrap();
    assert!(third.via_rerun);
    assert_eq!(third.resumed_from, None);
    let (status, _) = h.post(&format!("runs/{}/retry/", second), json!({})).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn flaky_outcomes_and_random_durations_follow_the_seed() {
    let yaml = format!(
        "account_id: {}\ntoken: {}\nseed: 99\njobs:\n{}",
        emulator::ACCOUNT,
        emulator::TOKEN,
        (0..10)
            .map(|i| format!("  - {{id: {}, name: j{i}, outcome: flaky, failure_probability: 0.5, duration: {{min: 2s, max: 20s}}}}\n", 1000 + i))
            .collect::<String>()
    );
    let mut histories = Vec::new();
    for _ in 0..2 {
        let h = Harness::start_with(&yaml).await;
        for i in 0..10 {
            h.trigger(1000 + i, json!({"cause": "seeded"})).await;
        }
        h.advance(60);
        let (_, listed) = h.get("runs/").await;
        let history: Vec<(i64, String)> = listed["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["status"].as_i64().unwrap(),
                    r["finished_at"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        histories.push(history);
    }
    assert_eq!(histories[0], histories[1], "same seed, same history");
    let failed = histories[0].iter().filter(|(s, _)| *s == 20).count();
    assert!(
        (1..10).contains(&failed),
        "p=0.5 over 10 runs: {failed} failed"
    );
    let distinct: std::collections::BTreeSet<&String> =
        histories[0].iter().map(|(_, f)| f).collect();
    assert!(distinct.len() > 1, "durations are drawn from the range");
}
