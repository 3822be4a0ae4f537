//! The real client against the emulator over loopback HTTP: each error class, retries of reads (5xx
//! retried and bounded, 429 waited out account-wide), pagination, `pk__in` batching and the
//! per-account budget. Waits are asserted through counters and a manual clock, never wall time.

#![allow(clippy::unwrap_used)] // tests may unwrap; clippy only knows that inside #[test] functions

use crate::support::dbt::{cause, start_time, Dbt, ACCOUNT, JOB, OTHER_JOB};
use crate::support::eventually;
use baton::clock::ManualClock;
use baton::dbt_cloud::wire::RunStatus;
use baton::dbt_cloud::{ApiError, DbtCloudClient, ListRuns, Related, TriggerError};
use baton::emulator::Faults;
use baton::ids::{AccountId, JobId, RunId};
use baton::secret::Secret;

#[tokio::test]
async fn each_error_class_comes_back_typed() {
    let dbt = Dbt::start().await;

    let mut wrong_token = dbt.config();
    wrong_token.token = Secret::new("dbtc_wrong");
    let client = DbtCloudClient::new(wrong_token).unwrap();
    assert_eq!(
        client.get_job(JOB).await.unwrap_err(),
        ApiError::Unauthorized
    );
    let rejected = client.trigger(JOB, &cause("a")).await.unwrap_err();
    assert_eq!(rejected, TriggerError::Rejected(ApiError::Unauthorized));

    let mut wrong_account = dbt.config();
    wrong_account.account_id = AccountId(ACCOUNT + 1);
    let client = DbtCloudClient::new(wrong_account).unwrap();
    let error = client.get_job(JOB).await.unwrap_err();
    assert!(
        matches!(&error, ApiError::Forbidden { message } if message.contains("not scoped")),
        "{error:?}"
    );

    let client = dbt.client();
    let error = client.get_run(RunId(1), &[]).await.unwrap_err();
    assert!(matches!(error, ApiError::NotFound { .. }), "{error:?}");
    let error = client.get_job(JobId(1)).await.unwrap_err();
    assert!(matches!(error, ApiError::NotFound { .. }), "{error:?}");

    let error = client
        .list_runs(&ListRuns {
            order_by: Some("colour".into()),
            ..ListRuns::default()
        })
        .await
        .unwrap_err();
    let ApiError::InvalidRequest { fields, .. } = &error else {
        panic!("not an invalid request: {error:?}");
    };
    assert!(fields["order_by"].contains("colour"), "{fields:?}");

    for error in [
        ApiError::Unauthorized,
        ApiError::NotFound {
            message: String::new(),
        },
        error,
    ] {
        assert!(!error.is_transient(), "{error:?}");
    }
    // Definite errors are not retried: one request each.
    assert_eq!(dbt.count("get_run", 404), 1);
    assert_eq!(dbt.count("list_runs", 400), 1);
    assert!(
        dbt.handle.runs().is_empty(),
        "a rejected trigger made a run"
    );
}

#[tokio::test]
async fn three_server_errors_then_success_is_one_successful_call() {
    let dbt = Dbt::start().await;
    dbt.handle.set_faults(Faults {
        server_errors_next: 3,
        routes: vec!["get_job".into()],
        ..Faults::default()
    });
    let client = dbt.client();
    let job = client.get_job(JOB).await.unwrap();
    assert_eq!(job.id, JOB);
    assert_eq!(dbt.count("get_job", 200), 1);
    assert_eq!(dbt.total("get_job"), 4, "{:?}", dbt.handle.request_counts());
    assert_eq!(client.budget().stats().requests, 4);

    // Retries are bounded: with two retries, three 5xx are the caller's error.
    dbt.handle.set_faults(Faults {
        server_errors_next: 3,
        routes: vec!["get_job".into()],
        ..Faults::default()
    });
    let mut config = dbt.config();
    config.max_retries = 2;
    let error = DbtCloudClient::new(config)
        .unwrap()
        .get_job(JOB)
        .await
        .unwrap_err();
    assert!(
        matches!(error, ApiError::Server { status: 500..=599, ref excerpt } if excerpt.contains("<html>")),
        "{error:?}"
    );
    assert!(error.is_transient());
    assert_eq!(dbt.total("get_job"), 7);
}

#[tokio::test]
async fn a_429_with_retry_after_is_waited_out_by_the_whole_account() {
    let dbt = Dbt::start().await;
    dbt.handle.set_faults(Faults {
        rate_limit_next: 1,
        retry_after_seconds: Some(30),
        routes: vec!["get_job".into()],
        ..Faults::default()
    });
    let client_clock = ManualClock::new(start_time());
    let client = dbt.client_on(&client_clock, 1000);
    // A second client of the same account shares the budget, so the cooldown holds it back too.
    let sibling = DbtCloudClient::with_budget(dbt.config(), client.budget().clone()).unwrap();

    let call = tokio::spawn({
        let client = client.clone();
        async move { client.get_job(JOB).await }
    });
    wait_until("the 429 is seen and the call waits", || {
        let stats = client.budget().stats();
        stats.rate_limited == 1 && stats.waiting == 1
    })
    .await;
    assert_eq!(
        client.budget().cooldown_until(),
        Some(start_time() + chrono::Duration::seconds(30))
    );
    let sibling_call = tokio::spawn(async move { sibling.get_run(RunId(1), &[]).await });
    wait_until("the sibling waits too", || {
        client.budget().stats().waiting == 2
    })
    .await;
    assert_eq!(dbt.count("get_job", 429), 1);
    assert_eq!(dbt.total("get_job"), 1);
    assert_eq!(dbt.total("get_run"), 0);

    client_clock.advance(chrono::Duration::seconds(30));
    assert_eq!(call.await.unwrap().unwrap().id, JOB);
    assert!(matches!(
        sibling_call.await.unwrap(),
        Err(ApiError::NotFound { .. })
    ));
    assert_eq!(dbt.count("get_job", 200), 1);
    let stats = client.budget().stats();
    assert_eq!((stats.rate_limited, stats.waits, stats.waiting), (1, 2, 0));
}

#[tokio::test]
async fn list_runs_walks_every_page_and_pk_in_is_batched_and_checked() {
    let dbt = Dbt::start().await;
    let client = dbt.client();
    let mut created = Vec::new();
    for i in 0..250 {
        let job = if i % 5 == 0 { OTHER_JOB } else { JOB };
        created.push((
            job,
            client
                .trigger(job, &cause(&i.to_string()))
                .await
                .unwrap()
                .id,
        ));
    }
    let of_job: Vec<RunId> = created
        .iter()
        .filter(|(job, _)| *job == JOB)
        .map(|(_, id)| *id)
        .collect();
    assert_eq!(of_job.len(), 200);

    let all = client.list_runs(&ListRuns::default()).await.unwrap();
    assert_eq!(all.len(), 250);
    let ids: Vec<RunId> = all.iter().map(|r| r.id).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(ids, sorted, "pages must be in id order without repeats");
    assert_eq!(dbt.count("list_runs", 200), 3);

    let newest_first = client
        .list_runs(&ListRuns {
            job_definition_id: Some(JOB),
            order_by: Some("-id".into()),
            limit: Some(40),
            include_related: vec![Related::Trigger],
            ..ListRuns::default()
        })
        .await
        .unwrap();
    let mut expected = of_job.clone();
    expected.reverse();
    assert_eq!(
        newest_first.iter().map(|r| r.id).collect::<Vec<_>>(),
        expected
    );
    assert!(newest_first.iter().all(|r| r.trigger.is_some()));
    assert_eq!(dbt.count("list_runs", 200), 3 + 5);

    // pk__in: 250 ids (one asked twice) in three calls of at most 100, answered in the order asked.
    let mut asked: Vec<RunId> = created.iter().map(|(_, id)| *id).rev().collect();
    asked.push(asked[0]);
    let runs = client.runs_by_ids(&asked).await.unwrap();
    assert_eq!(runs.len(), 250);
    assert_eq!(
        runs.iter().map(|r| r.id).collect::<Vec<_>>(),
        asked[..250].to_vec()
    );
    assert_eq!(dbt.count("list_runs", 200), 8 + 3);

    // A run that does not exist makes the answer differ from the question.
    let ghost = RunId(asked[0].0 + 1_000_000);
    let error = client.runs_by_ids(&[asked[1], ghost]).await.unwrap_err();
    assert_eq!(
        error,
        ApiError::RunSetMismatch {
            missing: vec![ghost],
            unexpected: vec![],
        }
    );
}

#[tokio::test]
async fn requests_past_the_budget_wait_for_the_clock() {
    let dbt = Dbt::start().await;
    let clock = ManualClock::new(start_time());
    let client = dbt.client_on(&clock, 60);
    for _ in 0..60 {
        client.get_job(JOB).await.unwrap();
    }
    assert_eq!(client.budget().stats().waits, 0);

    let waiting: Vec<_> = (0..5)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.get_job(JOB).await })
        })
        .collect();
    wait_until("five requests wait for the budget", || {
        client.budget().stats().waiting == 5
    })
    .await;
    assert_eq!(dbt.total("get_job"), 60, "a request went past the budget");

    // One request a second refills: five seconds let all five go.
    clock.advance(chrono::Duration::seconds(5));
    for call in waiting {
        call.await.unwrap().unwrap();
    }
    assert_eq!(dbt.total("get_job"), 65);
    let stats = client.budget().stats();
    assert_eq!((stats.requests, stats.waits, stats.waiting), (65, 5, 0));
}

#[tokio::test]
async fn runs_artifacts_cancel_and_rerun_round_trip() {
    let dbt = Dbt::start().await;
    let client = dbt.client();
    let first = client.trigger(JOB, &cause("k-life")).await.unwrap();
    let second = client.trigger(OTHER_JOB, &cause("k-cancel")).await.unwrap();

    let cancelled = client.cancel_run(second.id).await.unwrap();
    assert_eq!(cancelled.id, second.id);
    // A queued run is cancelled at once; cancelling again is harmless.
    assert_eq!(cancelled.status, RunStatus::Cancelled);
    assert_eq!(
        client.cancel_run(second.id).await.unwrap().status,
        RunStatus::Cancelled
    );

    dbt.clock.advance(chrono::Duration::hours(2));
    let done = client
        .get_run(
            first.id,
            &[Related::Trigger, Related::Job, Related::RunSteps],
        )
        .await
        .unwrap();
    assert_eq!(done.status, RunStatus::Success);
    assert!(done.trigger.is_some() && done.job.is_some());
    assert!(!done.run_steps.is_empty());

    let paths = client.list_artifacts(first.id, None).await.unwrap();
    assert!(paths.iter().any(|p| p == "run_results.json"), "{paths:?}");
    let bytes = client
        .get_artifact(first.id, "run_results.json", None)
        .await
        .unwrap();
    let results: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert!(results["results"].is_array());
    if let Some(nested) = paths.iter().find(|p| p.contains('/')) {
        client.get_artifact(first.id, nested, None).await.unwrap();
    }
    let error = client
        .get_artifact(second.id, "run_results.json", None)
        .await
        .unwrap_err();
    assert!(matches!(error, ApiError::NotFound { .. }), "{error:?}");

    let rerun = client.rerun(JOB).await.unwrap();
    assert_ne!(rerun.id, first.id);
    let recorded = dbt.handle.runs();
    assert!(recorded.iter().any(|r| r.id == rerun.id && r.via_rerun));
}

/// Waits until the budget's counters show what another task does (bounded by `eventually`).
async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let reached = eventually(std::time::Duration::from_secs(10), || {
        let now = condition();
        async move { now }
    })
    .await;
    assert!(reached, "timed out waiting until {what}");
}
