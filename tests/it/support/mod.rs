//! What the integration tests share: the in-process daemon (`daemon`), its control API (`api`),
//! emulators for the client (`dbt`) and for the emulator's own tests (`emulator`), the real
//! binaries as processes (`process`, with the crash and soak verdict in `check`), the fuzz runner,
//! scenario builders, one time parser, one `eventually` and the slow-test gate.

pub mod api;
pub mod check;
pub mod chromium;
pub mod daemon;
pub mod dbt;
pub mod emulator;
pub mod fuzz;
pub mod http_responses;
pub mod pg;
pub mod process;
pub mod scenario;

use chrono::{DateTime, Utc};
use std::io::Write;
use std::time::{Duration, Instant};

/// An RFC 3339 instant, in UTC.
pub fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("{s}: {e}"))
        .with_timezone(&Utc)
}

/// How often `eventually` looks again.
const POLL: Duration = Duration::from_millis(10);

/// Waits for a condition another task or process makes true (an event the test cannot subscribe
/// to); false once `limit` of real time has passed. Bounded, so that a bug fails the test instead
/// of hanging it.
pub async fn eventually<F, Fut>(limit: Duration, mut ready: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if ready().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `eventually` for a thread that may block (running commands, reading files), looking again
/// every `every`.
pub fn eventually_blocking(
    limit: Duration,
    every: Duration,
    mut ready: impl FnMut() -> bool,
) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if ready() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(every);
    }
}

/// The environment variable that turns on the slow tests (CI sets it in `.ci/run`).
pub const SLOW_TESTS_VAR: &str = "BATON_SLOW_TESTS";

/// Whether the slow tests run; when they do not, says which one was skipped and how to run it.
/// A slow test begins with `if !support::slow_tests_enabled("name") { return; }`.
pub fn slow_tests_enabled(test: &str) -> bool {
    let enabled = std::env::var(SLOW_TESTS_VAR).is_ok_and(|v| !v.is_empty() && v != "0");
    if !enabled {
        // Straight to stderr, past the test harness's capture, so that the skip shows.
        let _ = writeln!(
            std::io::stderr(),
            "skipped {test}: a slow test; run it with `{SLOW_TESTS_VAR}=1 cargo test` (CI does)"
        );
    }
    enabled
}
