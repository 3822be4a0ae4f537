//! Webhooks over real HTTP: started, completed and errored deliveries with dbt Cloud's body and an
//! HMAC-SHA256 `Authorization` header, sent when the clock passes the transition (nobody polls),
//! and retried while the receiver fails.

#![allow(clippy::unwrap_used)]

use crate::support::emulator::{Harness, ACCOUNT, TOKEN};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Receiver {
    received: Mutex<Vec<(String, Bytes)>>,
    fail_next: Mutex<u32>,
}

async fn receive(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let auth = headers
        .get("authorization")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    r.received.lock().unwrap().push((auth, body));
    let mut fail = r.fail_next.lock().unwrap();
    if *fail > 0 {
        *fail -= 1;
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    }
}

async fn start_receiver(fail_first: u32) -> (String, Arc<Receiver>) {
    let receiver = Arc::new(Receiver::default());
    *receiver.fail_next.lock().unwrap() = fail_first;
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, receiver)
}

fn scenario(url: &str) -> String {
    format!(
        r#"
account_id: {ACCOUNT}
token: {TOKEN}
jobs:
  - {{id: 100, name: ok, duration: 5s}}
  - {{id: 200, name: broken, outcome: error, duration: 5s}}
  - {{id: 300, name: unwatched, duration: 5s}}
webhooks:
  - name: baton
    url: {url}
    secret: whsec-test
    job_ids: [100, 200]
    retry_backoff: 10ms
"#
    )
}

fn bodies(r: &Receiver) -> Vec<(String, Value)> {
    r.received
        .lock()
        .unwrap()
        .iter()
        .map(|(auth, body)| (auth.clone(), serde_json::from_slice(body).unwrap()))
        .collect()
}

#[tokio::test]
async fn started_and_completed_are_delivered_signed_when_the_clock_passes_them() {
    let (url, receiver) = start_receiver(0).await;
    let h = Harness::start_with(&scenario(&url)).await;
    let ok = h.trigger(100, json!({"cause": "nightly"})).await;
    h.trigger(300, json!({"cause": "not watched"})).await;
    h.advance(2);
    h.handle.wait_until_idle().await;
    // Nobody polled: the emulator's own task noticed the run start.
    let got = bodies(&receiver);
    assert_eq!(got.len(), 1, "{got:?}");
    let (auth, event) = &got[0];
    assert_eq!(event["eventType"], "job.run.started");
    assert_eq!(event["accountId"], ACCOUNT);
    assert_eq!(event["webhookName"], "baton");
    assert_eq!(event["data"]["runId"], ok.to_string());
    assert_eq!(event["data"]["jobId"], "100");
    assert_eq!(event["data"]["runStatus"], "Running");
    assert_eq!(event["data"]["runReason"], "nightly");
    assert!(event["eventId"].as_str().unwrap().starts_with("wev_"));
    let raw = receiver.received.lock().unwrap()[0].1.clone();
    assert_eq!(
        auth,
        &baton::emulator::webhooks::signature("whsec-test", &raw)
    );
    assert_eq!(auth.len(), 64);
    assert!(auth
        .chars()
        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));

    h.advance(5);
    h.handle.wait_until_idle().await;
    let got = bodies(&receiver);
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].1["eventType"], "job.run.completed");
    assert_eq!(got[1].1["data"]["runStatus"], "Success");
    assert_eq!(got[1].1["data"]["runStatusCode"], 10);
    assert!(got[1].1["data"]["runFinishedAt"].is_string());
}

#[tokio::test]
async fn an_error_sends_completed_and_errored_and_failures_are_retried() {
    let (url, receiver) = start_receiver(2).await;
    let h = Harness::start_with(&scenario(&url)).await;
    h.trigger(200, json!({"cause": "will fail"})).await;
    h.advance(2);
    h.handle.wait_until_idle().await;
    h.advance(5);
    h.handle.wait_until_idle().await;
    let got = bodies(&receiver);
    let types: Vec<&str> = got
        .iter()
        .map(|(_, e)| e["eventType"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "job.run.started",
            "job.run.started",
            "job.run.started",
            "job.run.completed",
            "job.run.errored"
        ],
        "the first delivery is retried twice"
    );
    assert_eq!(
        got[0].1["eventId"], got[2].1["eventId"],
        "a retry resends the same event"
    );
    assert_eq!(got[4].1["data"]["runStatus"], "Errored");
    assert!(got[4].1["data"]["runErroredAt"].is_string());
    let records = h.handle.webhook_deliveries();
    assert_eq!(records.len(), 3);
    assert_eq!(records[0].attempts, 3);
    assert!(records.iter().all(|r| r.delivered));
}

#[tokio::test]
async fn a_receiver_that_keeps_failing_is_given_up_after_max_attempts() {
    let (url, receiver) = start_receiver(u32::MAX).await;
    let yaml = scenario(&url).replace(
        "retry_backoff: 10ms",
        "retry_backoff: 5ms\n    max_attempts: 3",
    );
    let h = Harness::start_with(&yaml).await;
    h.trigger(100, json!({"cause": "x"})).await;
    h.advance(2);
    h.handle.wait_until_idle().await;
    assert_eq!(receiver.received.lock().unwrap().len(), 3);
    let records = h.handle.webhook_deliveries();
    assert_eq!(records.len(), 1);
    assert!(!records[0].delivered);
    assert_eq!(records[0].attempts, 3);
    assert_eq!(records[0].last_status, Some(503));
}
