//! Harness for the client's integration tests: an emulator on a manual clock, clients pointed at it
//! with fast retries, and counters of what the emulator answered.

#![allow(dead_code, clippy::unwrap_used)]

use baton::clock::{ManualClock, SharedClock};
use baton::dbt_cloud::wire::TriggerRequest;
use baton::dbt_cloud::{ClientConfig, DbtCloudClient, RequestBudget};
use baton::emulator::{Emulator, EmulatorHandle, Scenario};
use baton::ids::JobId;
use baton::secret::Secret;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub const ACCOUNT: i64 = 70_403_103_922_125;
pub const JOB: JobId = JobId(70_403_103_936_332);
pub const OTHER_JOB: JobId = JobId(70_403_103_936_333);

pub fn scenario() -> Scenario {
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

pub fn start_time() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-01T02:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

/// A running emulator on a manual clock (its runs move only when the test advances it).
pub struct Dbt {
    pub handle: EmulatorHandle,
    pub clock: ManualClock,
    shutdown: CancellationToken,
}

impl Drop for Dbt {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Dbt {
    pub async fn start() -> Self {
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
    pub fn config(&self) -> ClientConfig {
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

    pub fn client(&self) -> DbtCloudClient {
        DbtCloudClient::new(self.config()).unwrap()
    }

    /// A client whose budget (and so every wait) runs on `clock`.
    pub fn client_on(&self, clock: &ManualClock, requests_per_minute: u32) -> DbtCloudClient {
        let budget = Arc::new(RequestBudget::new(
            requests_per_minute,
            Arc::new(clock.clone()),
        ));
        DbtCloudClient::with_budget(self.config(), budget).unwrap()
    }

    /// How many requests to `route` were answered with `status`.
    pub fn count(&self, route: &str, status: u16) -> u64 {
        self.handle
            .request_counts()
            .get(&(route.to_string(), status))
            .copied()
            .unwrap_or(0)
    }

    pub fn total(&self, route: &str) -> u64 {
        self.handle
            .request_counts()
            .iter()
            .filter(|((r, _), _)| r == route)
            .map(|(_, n)| n)
            .sum()
    }
}

pub fn cause(key: &str) -> TriggerRequest {
    TriggerRequest {
        cause: format!("baton nightly/staging attempt 1 key={key}"),
        ..TriggerRequest::default()
    }
}
