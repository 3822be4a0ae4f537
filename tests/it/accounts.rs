//! A DAG across two dbt Cloud accounts with the real binaries: two `baton emulator` processes (two
//! accounts, each with its own id, token and run ids, and both with a job 1) and `baton run` with
//! `dbt_cloud:` for account A and `accounts: { b: ... }` for account B, on one fast time line. The
//! step in account B waits for two steps in account A; every trigger reaches the account of its
//! step with that account's token, and neither emulator ever sees the other's token (it would
//! answer 401). And each account's webhooks have a path and a secret of their own.

use crate::support::process::{EmulatedRun, EmulatorProcess, TimeLine, Workspace};
use crate::support::{eventually, t};
use std::time::Duration;

const SCENARIO_A: &str = r#"
account_id: 70403103922125
token: token-of-account-a
timing: { queue_delay: 1s, start_delay: 1s }
jobs:
  - { id: 1, name: staging, duration: 1m }
  - { id: 2, name: marts, duration: 3m }
"#;

const SCENARIO_B: &str = r#"
account_id: 70403103955555
token: token-of-account-b
first_run_id: 90000000000000
timing: { queue_delay: 1s, start_delay: 1s }
jobs:
  - { id: 1, name: exports, duration: 1m }
"#;

const PIPELINE: &str = r#"name: cross
schedule: { cron: "0 0 * * *", timezone: UTC }
steps:
  staging: { job_id: 1 }
  marts: { job_id: 2 }
  exports:
    account: b
    job_id: 1
    depends_on: [staging, marts]
"#;

#[test]
fn a_step_in_account_b_waits_for_two_steps_in_account_a_and_each_call_uses_its_accounts_token() {
    let scratch = tempfile::tempdir().unwrap();
    let time = TimeLine::starting_now(t("2025-12-31T23:59:50Z"), 60.0);
    let start = |name: &str, yaml: &str| {
        let scenario = scratch.path().join(format!("{name}.scenario.yaml"));
        std::fs::write(&scenario, yaml).unwrap();
        EmulatorProcess::start(
            &scenario,
            &time,
            &scratch.path().join(format!("{name}.log")),
        )
    };
    let a = start("a", SCENARIO_A);
    let b = start("b", SCENARIO_B);
    let extra = format!(
        "poll_interval: 5s\naccounts:\n  b:\n    base_url: {}\n    account_id: {}\n    \
         token_file: token-b\n    requests_per_minute: 1000000\n    request_timeout: 10s\n",
        b.base_url, b.account_id
    );
    let workspace = Workspace::new(&a, &extra);
    std::fs::write(workspace.dir.path().join("token-b"), &b.token).unwrap();
    workspace.write_pipeline("cross.yaml", PIPELINE);
    workspace.seed_cursor("cross", t("2025-12-31T23:59:00Z"));
    let _daemon = workspace.start_daemon(&time);

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let done = runtime.block_on(eventually(Duration::from_secs(60), || {
        let runs = b.runs();
        async move { runs.await.iter().any(EmulatedRun::is_terminal) }
    }));
    assert!(
        done,
        "account B's step never finished; daemon log:\n{}",
        workspace.log_text()
    );
    let runs_a = runtime.block_on(a.runs());
    let runs_b = runtime.block_on(b.runs());
    let of = |runs: &[EmulatedRun], job: i64| -> Vec<EmulatedRun> {
        runs.iter().filter(|r| r.job_id == job).cloned().collect()
    };
    let (staging, marts) = (of(&runs_a, 1), of(&runs_a, 2));
    assert_eq!(
        (staging.len(), marts.len(), runs_a.len()),
        (1, 1, 2),
        "{runs_a:#?}"
    );
    assert_eq!(runs_b.len(), 1, "only the step of account B: {runs_b:#?}");
    let exports = &runs_b[0];
    assert_eq!(exports.job_id, 1);
    assert!(exports.cause.contains("exports"), "{}", exports.cause);
    assert!(staging[0].cause.contains("staging") && marts[0].cause.contains("marts"));
    // Fan-in across accounts: B's trigger came after both of A's runs ended (1 and 3 minutes).
    assert!(exports.created_at >= staging[0].created_at + chrono::Duration::minutes(1));
    assert!(exports.created_at >= marts[0].created_at + chrono::Duration::minutes(3));

    // Every request either emulator answered was authorised: no token went to the wrong account.
    for (name, emulator) in [("A", &a), ("B", &b)] {
        let counts = runtime.block_on(emulator.request_counts());
        let refused: Vec<_> = counts
            .iter()
            .filter(|c| c.status == 401 || c.status == 403 || c.status == 404)
            .collect();
        assert!(refused.is_empty(), "account {name} refused: {refused:#?}");
        let triggers: u64 = counts
            .iter()
            .filter(|c| c.route == "trigger_run" && c.status < 300)
            .map(|c| c.count)
            .sum();
        let expected = if name == "A" { 2 } else { 1 };
        assert_eq!(triggers, expected, "account {name}: {counts:#?}");
    }
    assert!(workspace.wait_for_log(
        "\"event\":\"pipeline_run_succeeded\",\"pipeline\":\"cross\"",
        Duration::from_secs(30)
    ));
    let log = workspace.log_text();
    assert!(!log.contains("token-of-account-a") && !log.contains("token-of-account-b"));
}

/// Each account's webhook subscription posts to its own path with its own secret: a delivery signed
/// with another account's secret is refused there.
#[tokio::test]
async fn an_accounts_webhooks_have_their_own_path_and_secret() {
    use baton::emulator::webhooks::signature;
    use baton::ids::AccountName;
    use baton::ops::webhook::{account_path, router_at, router_with_stats};
    use baton::secret::Secret;

    let h = crate::support::daemon::Harness::start(
        "2026-01-05T10:00:00Z",
        "account_id: 70403103922125\ntoken: test-token\njobs:\n  - { id: 1, name: a }\n",
        vec![],
    )
    .await;
    let emea_path = account_path(&AccountName("emea".into()));
    assert_eq!(emea_path, "/webhooks/dbt-cloud/emea");
    let (default_app, default_stats) =
        router_with_stats(Secret::new("whsec-default"), h.daemon.clone());
    let (emea_app, emea_stats) = router_at(&emea_path, Secret::new("whsec-emea"), h.daemon.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(listener, default_app.merge(emea_app))
            .await
            .unwrap()
    });
    let body = r#"{"accountId":70403103955555,"eventId":"wev_emea","timestamp":"2026-01-05T10:00:00.000000000Z","eventType":"job.run.completed","webhookName":"baton","data":{"jobId":"1","runId":"90000000000001","runStatus":"Success","runStatusCode":10}}"#;
    let http = reqwest::Client::new();
    let post = |secret: &str| {
        http.post(format!("{base}{emea_path}"))
            .header("Authorization", signature(secret, body.as_bytes()))
            .body(body)
            .send()
    };
    assert_eq!(post("whsec-default").await.unwrap().status(), 401);
    assert_eq!(post("whsec-emea").await.unwrap().status(), 200);
    assert_eq!(emea_stats.lock().unwrap().accepted, 1);
    assert_eq!(emea_stats.lock().unwrap().bad_signature, 1);
    assert_eq!(default_stats.lock().unwrap().accepted, 0);
    h.shutdown().await;
}
