//! Test harness for the emulator: starts it in-process on port 0 with a manual clock and gives a
//! small HTTP client that speaks to it as dbt Cloud clients do.
#![allow(dead_code, clippy::unwrap_used)]

use baton::clock::ManualClock;
use baton::emulator::{Emulator, EmulatorHandle, Scenario};
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub const ACCOUNT: i64 = 70403103922125;
pub const TOKEN: &str = "emulator-test-token";

/// A scenario with a few jobs of known behaviour, on which most tests run.
pub fn scenario_yaml() -> String {
    format!(
        r#"
account_id: {ACCOUNT}
token: {TOKEN}
seed: 7
timing: {{queue_delay: 1s, start_delay: 1s, duration: 5s, cancel_delay: 2s}}
jobs:
  - {{id: 100, name: ok, duration: 5s, models: 4}}
  - {{id: 200, name: broken, outcome: error, fail_at_step: 5, execute_steps: ["dbt seed", "dbt run", "dbt test"], duration: 12s}}
  - {{id: 300, name: slow, duration: 1h, timeout_seconds: 60}}
  - {{id: 400, name: fails-once, outcome: fail_first, fail_first: 1, duration: 4s}}
  - {{id: 500, name: other, duration: 5s}}
"#
    )
}

pub struct Harness {
    pub clock: ManualClock,
    pub handle: EmulatorHandle,
    pub client: reqwest::Client,
    pub shutdown: CancellationToken,
}

pub fn start_time() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-02T08:00:00.250000Z")
        .unwrap()
        .with_timezone(&Utc)
}

impl Harness {
    pub async fn start() -> Self {
        Self::start_with(&scenario_yaml()).await
    }

    pub async fn start_with(yaml: &str) -> Self {
        let scenario = Scenario::from_yaml_str(yaml).unwrap();
        let clock = ManualClock::new(start_time());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let shutdown = CancellationToken::new();
        let handle = Emulator::start(
            scenario,
            Arc::new(clock.clone()),
            listener,
            shutdown.clone(),
        )
        .await
        .unwrap();
        Self {
            clock,
            handle,
            client: reqwest::Client::new(),
            shutdown,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!(
            "{}/api/v2/accounts/{ACCOUNT}/{path}",
            self.handle.base_url()
        )
    }

    pub fn advance(&self, seconds: i64) {
        self.clock.advance(chrono::Duration::seconds(seconds));
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .client
            .get(self.url(path))
            .header("Authorization", format!("Token {TOKEN}"))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let response = self
            .client
            .post(self.url(path))
            .header("Authorization", format!("Bearer {TOKEN}"))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Triggers `job` with `cause` and returns the new run's id.
    pub async fn trigger(&self, job: i64, body: Value) -> i64 {
        let (status, answer) = self.post(&format!("jobs/{job}/run/"), body).await;
        assert_eq!(status, 200, "{answer}");
        answer["data"]["id"].as_i64().unwrap()
    }

    pub async fn run(&self, id: i64) -> Value {
        let (status, answer) = self.get(&format!("runs/{id}/")).await;
        assert_eq!(status, 200, "{answer}");
        answer["data"].clone()
    }

    pub async fn status(&self, id: i64) -> i64 {
        self.run(id).await["status"].as_i64().unwrap()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
