//! Fault injection over real HTTP: HTML 5xx, 429 with and without Retry-After, a trigger that
//! queues its run and still answers 502, a connection dropped mid-response, added latency, the
//! control endpoint that replaces faults at run time, and request counts.

#![allow(clippy::unwrap_used)]

use crate::support::emulator::{Harness, TOKEN};
use baton::emulator::Faults;
use serde_json::json;

#[tokio::test]
async fn server_errors_come_with_html_bodies_and_have_no_effect() {
    let h = Harness::start().await;
    h.handle.set_faults(Faults {
        server_errors_next: 3,
        ..Faults::default()
    });
    for _ in 0..3 {
        let answer = h
            .client
            .post(h.url("jobs/100/run/"))
            .header("Authorization", format!("Token {TOKEN}"))
            .json(&json!({"cause": "x"}))
            .send()
            .await
            .unwrap();
        assert!([500, 502, 503].contains(&answer.status().as_u16()));
        assert!(answer.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        assert!(answer.text().await.unwrap().contains("<html>"));
    }
    assert!(
        h.handle.runs().is_empty(),
        "no run queued by a rejected request"
    );
    h.trigger(100, json!({"cause": "x"})).await;
    assert_eq!(h.handle.runs().len(), 1);
}

#[tokio::test]
async fn rate_limits_answer_429_with_and_without_retry_after() {
    let h = Harness::start().await;
    h.handle.set_faults(Faults {
        rate_limit_next: 1,
        retry_after_seconds: Some(7),
        ..Faults::default()
    });
    let answer = h
        .client
        .get(h.url("runs/"))
        .header("Authorization", format!("Token {TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 429);
    assert_eq!(answer.headers()["retry-after"], "7");
    let body: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(body["status"]["code"], 429);

    h.handle.set_faults(Faults {
        rate_limit_next: 2,
        ..Faults::default()
    });
    for _ in 0..2 {
        let answer = h
            .client
            .get(h.url("runs/"))
            .header("Authorization", format!("Token {TOKEN}"))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 429);
        assert!(answer.headers().get("retry-after").is_none());
    }
    assert_eq!(h.get("runs/").await.0, 200);
    assert_eq!(
        h.handle.request_counts()[&("list_runs".to_string(), 429)],
        3
    );
}

#[tokio::test]
async fn a_trigger_can_queue_the_run_and_still_answer_502() {
    let h = Harness::start().await;
    h.handle.set_faults(Faults {
        trigger_502_next: 1,
        routes: vec!["trigger_run".into()],
        ..Faults::default()
    });
    let (status, body) = h.post("jobs/100/run/", json!({"cause": "key-123"})).await;
    assert_eq!(status, 502);
    assert!(body.as_str().unwrap().contains("502 Bad Gateway"));
    let runs = h.handle.runs();
    assert_eq!(runs.len(), 1, "the run was queued anyway");
    assert_eq!(runs[0].answered_status, 502);
    assert_eq!(runs[0].cause, "key-123");
    let (_, listed) = h
        .get("runs/?job_definition_id=100&order_by=-id&include_related=[\"trigger\"]")
        .await;
    assert_eq!(listed["data"][0]["trigger"]["cause"], "key-123");
}

#[tokio::test]
async fn a_dropped_connection_fails_the_client_after_the_effect() {
    let h = Harness::start().await;
    h.handle.set_faults(Faults {
        drop_connection_next: 1,
        ..Faults::default()
    });
    let sent = h
        .client
        .post(h.url("jobs/100/run/"))
        .header("Authorization", format!("Token {TOKEN}"))
        .json(&json!({"cause": "dropped"}))
        .send()
        .await;
    let body = match sent {
        Ok(response) => response.text().await.map(|_| ()),
        Err(e) => Err(e),
    };
    assert!(body.is_err(), "the client must see a broken response");
    assert_eq!(h.handle.runs().len(), 1, "the trigger took effect");
    assert_eq!(h.get("runs/").await.0, 200, "later requests are served");
}

#[tokio::test]
async fn faults_can_be_replaced_through_the_control_endpoint() {
    let h = Harness::start().await;
    let url = format!("{}/_emulator/faults", h.handle.base_url());
    let answer = h
        .client
        .put(&url)
        .header("Authorization", format!("Token {TOKEN}"))
        .json(&json!({"server_errors_next": 1, "latency_ms": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(h.handle.faults().server_errors_next, 1);
    assert!(h.get("jobs/").await.0 >= 500);
    assert_eq!(h.get("jobs/").await.0, 200);
    let answer = h.client.put(&url).json(&json!({})).send().await.unwrap();
    assert_eq!(answer.status(), 401, "control needs the token too");
    let counts: serde_json::Value = h
        .client
        .get(format!("{}/_emulator/requests", h.handle.base_url()))
        .header("Authorization", format!("Token {TOKEN}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rows = counts["data"].as_array().unwrap();
    assert!(rows
        .iter()
        .any(|r| r["route"] == "list_jobs" && r["status"] == 200 && r["count"] == 1));
}

#[tokio::test]
async fn added_latency_outlasts_a_client_with_a_shorter_timeout() {
    let h = Harness::start().await;
    h.handle.set_faults(Faults {
        latency_ms: 3_000,
        ..Faults::default()
    });
    let impatient = reqwest::Client::builder()
        .timeout(std::time::Duration::from_millis(200))
        .build()
        .unwrap();
    let answer = impatient
        .get(h.url("runs/"))
        .header("Authorization", format!("Token {TOKEN}"))
        .send()
        .await;
    assert!(answer.unwrap_err().is_timeout());
    h.handle.set_faults(Faults::default());
    assert_eq!(h.get("runs/").await.0, 200);
}
