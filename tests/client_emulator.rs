//! The real client against the emulator over loopback HTTP: each error class, the retry rules (5xx
//! retried, 429 waited out, an ambiguous trigger never re-sent), pagination, `pk__in` batching and
//! the per-account budget. Waits are asserted through counters and a manual clock, never wall time.

#![allow(clippy::unwrap_used)] // tests may unwrap; clippy only knows that inside #[test] functions

use baton::clock::{ManualClock, SharedClock};
use baton::dbt_cloud::wire::{RunStatus, TriggerRequest};
use baton::dbt_cloud::{
    ApiError, ClientConfig, DbtCloudClient, ListRuns, Related, RequestBudget, TriggerError,
};
use baton::emulator::{Emulator, EmulatorHandle, Faults, Scenario};
use baton::ids::{AccountId, JobId, RunId};
use baton::secret::Secret;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const ACCOUNT: i64 = 70_403_103_922_125;
const JOB: JobId = JobId(70_403_103_936_332);
const OTHER_JOB: JobId = JobId(70_403_103_936_333);

fn scenario() -> Scenario {
    Scenario::from_yaml_str(&format!(
        r#"
account_id: {ACCOUNT}
token: "dbtc_emulated-token"
seed: 7
jobs:
  - id: {}
    name: nightly
  - id: {}
    name: marts
"#,
        JOB.0, OTHER_JOB.0
    ))
    .unwrap()
}

fn start_time() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-01T02:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

/// A running emulator on a manual clock (its runs move only when the test advances it).
struct Dbt {
    handle: EmulatorHandle,
    clock: ManualClock,
    shutdown: CancellationToken,
}

impl Drop for Dbt {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Dbt {
    async fn start() -> Self {
        let clock = ManualClock::new(start_time());
        let shared: SharedClock = Arc::new(clock.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let shutdown = CancellationToken::new();
        let handle = Emulator::start(scenario(), shared, listener, shutdown.clone())
            .await
            .unwrap();
        Self {
            handle,
            clock,
            shutdown,
        }
    }

    /// Fast retries so that tests do not linger; budgets on the system clock unless given.
    fn config(&self) -> ClientConfig {
        let mut config = ClientConfig::new(
            self.handle.base_url().parse().unwrap(),
            self.handle.account_id(),
            Secret::new(self.handle.token()),
        );
        config.retry_base_delay = Duration::from_millis(2);
        config.retry_max_delay = Duration::from_millis(10);
        config.request_timeout = Duration::from_secs(10);
        config
    }

    fn client(&self) -> DbtCloudClient {
        DbtCloudClient::new(self.config()).unwrap()
    }

    /// A client whose budget (and so every wait) runs on `clock`.
    fn client_on(&self, clock: &ManualClock, requests_per_minute: u32) -> DbtCloudClient {
        let budget = Arc::new(RequestBudget::new(
            requests_per_minute,
            Arc::new(clock.clone()),
        ));
        DbtCloudClient::with_budget(self.config(), budget).unwrap()
    }

    /// How many requests to `route` were answered with `status`.
    fn count(&self, route: &str, status: u16) -> u64 {
        self.handle
            .request_counts()
            .get(&(route.to_string(), status))
            .copied()
            .unwrap_or(0)
    }

    fn total(&self, route: &str) -> u64 {
        self.handle
            .request_counts()
            .iter()
            .filter(|((r, _), _)| r == route)
            .map(|(_, n)| n)
            .sum()
    }
}

fn cause(key: &str) -> TriggerRequest {
    TriggerRequest {
        cause: format!("baton nightly/staging attempt 1 key={key}"),
        ..TriggerRequest::default()
    }
}

/// Waits for a condition another task makes true (an event the test cannot subscribe to), bounded
/// so that a bug fails the test instead of hanging it.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    for _ in 0..5000 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("timed out waiting until {what}");
}

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
    eventually("the 429 is seen and the call waits", || {
        let stats = client.budget().stats();
        stats.rate_limited == 1 && stats.waiting == 1
    })
    .await;
    assert_eq!(
        client.budget().cooldown_until(),
        Some(start_time() + chrono::Duration::seconds(30))
    );
    let sibling_call = tokio::spawn(async move { sibling.get_run(RunId(1), &[]).await });
    eventually("the sibling waits too", || {
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
async fn a_trigger_answered_502_after_queueing_is_ambiguous_and_never_resent() {
    let dbt = Dbt::start().await;
    dbt.handle.set_faults(Faults {
        trigger_502_next: 1,
        ..Faults::default()
    });
    let client = dbt.client();
    let body = cause("k-502");
    let error = client.trigger(JOB, &body).await.unwrap_err();
    assert!(
        matches!(
            &error,
            TriggerError::Ambiguous(ApiError::Server { status: 502, .. })
        ),
        "{error:?}"
    );
    let runs = dbt.handle.runs();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].cause, body.cause);
    assert_eq!(runs[0].answered_status, 502);
    assert_eq!(dbt.total("trigger_run"), 1, "the trigger was re-sent");

    // Reconciliation finds the run by the key in its cause.
    let newest = client
        .list_runs_page(&ListRuns {
            limit: Some(10),
            ..ListRuns::newest_of_job(JOB)
        })
        .await
        .unwrap()
        .0;
    let adopted = newest
        .iter()
        .find(|run| {
            run.trigger
                .as_ref()
                .and_then(|t| t.cause.as_deref())
                .is_some_and(|c| c.contains("key=k-502"))
        })
        .expect("the queued run is found by its cause");
    assert_eq!(adopted.id, runs[0].id);
}

#[tokio::test]
async fn a_trigger_whose_connection_drops_is_ambiguous_and_never_resent() {
    let dbt = Dbt::start().await;
    dbt.handle.set_faults(Faults {
        drop_connection_next: 1,
        routes: vec!["trigger_run".into()],
        ..Faults::default()
    });
    let error = dbt
        .client()
        .trigger(JOB, &cause("k-drop"))
        .await
        .unwrap_err();
    assert!(error.is_ambiguous(), "{error:?}");
    assert_eq!(dbt.handle.runs().len(), 1);
    assert_eq!(dbt.total("trigger_run"), 1);
}

#[tokio::test]
async fn a_trigger_refused_with_429_created_nothing_and_is_sent_again_after_the_wait() {
    let dbt = Dbt::start().await;
    dbt.handle.set_faults(Faults {
        rate_limit_next: 1,
        retry_after_seconds: Some(0),
        routes: vec!["trigger_run".into()],
        ..Faults::default()
    });
    let client = dbt.client();
    let run = client.trigger(JOB, &cause("k-429")).await.unwrap();
    assert_eq!(run.status, RunStatus::Queued);
    let runs = dbt.handle.runs();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].id, run.id);
    assert_eq!(dbt.count("trigger_run", 429), 1);
    assert_eq!(dbt.count("trigger_run", 200), 1);
    assert_eq!(client.budget().stats().rate_limited, 1);

    // When 429s outlast the retries the caller learns nothing was sent.
    dbt.handle.set_faults(Faults {
        rate_limit_next: 10,
        retry_after_seconds: Some(0),
        routes: vec!["trigger_run".into()],
        ..Faults::default()
    });
    let mut config = dbt.config();
    config.max_retries = 1;
    let error = DbtCloudClient::new(config)
        .unwrap()
        .trigger(JOB, &cause("k-429-again"))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, TriggerError::NotSent(ApiError::RateLimited { retry_after: Some(d) }) if d.is_zero()),
        "{error:?}"
    );
    assert_eq!(dbt.handle.runs().len(), 1);
}

#[tokio::test]
async fn a_trigger_that_cannot_connect_is_not_sent() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let mut config = ClientConfig::new(
        closed.parse().unwrap(),
        AccountId(ACCOUNT),
        Secret::new("x"),
    );
    config.max_retries = 1;
    config.retry_base_delay = Duration::from_millis(1);
    let client = DbtCloudClient::new(config).unwrap();
    let error = client.trigger(JOB, &cause("k-refused")).await.unwrap_err();
    assert!(
        matches!(&error, TriggerError::NotSent(ApiError::Transport(_))),
        "{error:?}"
    );
    assert_eq!(client.budget().stats().requests, 2);
}

#[tokio::test]
async fn an_overlong_cause_is_rejected_without_a_request() {
    let dbt = Dbt::start().await;
    let client = dbt.client();
    let error = client
        .trigger(
            JOB,
            &TriggerRequest {
                cause: "x".repeat(256),
                ..TriggerRequest::default()
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&error, TriggerError::Rejected(ApiError::InvalidRequest { fields, .. }) if fields.contains_key("cause")),
        "{error:?}"
    );
    assert_eq!(dbt.total("trigger_run"), 0);
    // 255 characters (not bytes) are fine.
    let run = client
        .trigger(
            JOB,
            &TriggerRequest {
                cause: "é".repeat(255),
                ..TriggerRequest::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        run.trigger.and_then(|t| t.cause).map(|c| c.chars().count()),
        Some(255)
    );
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
    eventually("five requests wait for the budget", || {
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

#[tokio::test]
async fn a_trigger_that_times_out_after_sending_is_ambiguous_and_reads_retry_timeouts() {
    let dbt = Dbt::start().await;
    // The emulator applies the latency after the request took effect.
    dbt.handle.set_faults(Faults {
        latency_ms: 400,
        ..Faults::default()
    });
    let mut config = dbt.config();
    config.request_timeout = Duration::from_millis(50);
    config.max_retries = 1;
    let client = DbtCloudClient::new(config).unwrap();

    let error = client.trigger(JOB, &cause("k-timeout")).await.unwrap_err();
    assert_eq!(error, TriggerError::Ambiguous(ApiError::Timeout));
    assert_eq!(dbt.handle.runs().len(), 1);
    assert_eq!(
        dbt.total("trigger_run"),
        1,
        "a timed-out trigger was re-sent"
    );

    let error = client.get_job(JOB).await.unwrap_err();
    assert_eq!(error, ApiError::Timeout);
    assert_eq!(dbt.total("get_job"), 2, "a timed-out read is retried");
}
