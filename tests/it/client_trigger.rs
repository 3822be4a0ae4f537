//! The trigger POST against the emulator over loopback HTTP: it is never re-sent once it may have
//! reached dbt Cloud (a 502 after queueing, a dropped connection, a timeout are ambiguous), and sent
//! again only when the first send provably did nothing (a 429, a connection never opened).

#![allow(clippy::unwrap_used)] // tests may unwrap; clippy only knows that inside #[test] functions

use crate::support::dbt::{cause, Dbt, ACCOUNT, JOB};
use baton::dbt_cloud::wire::{RunStatus, TriggerRequest};
use baton::dbt_cloud::{ApiError, ClientConfig, DbtCloudClient, ListRuns, TriggerError};
use baton::emulator::Faults;
use baton::ids::AccountId;
use baton::secret::Secret;
use std::time::Duration;

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
