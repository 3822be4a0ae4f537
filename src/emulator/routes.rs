//! Which endpoint a request is for: the API routes under `/api/v2/accounts/{account_id}/` (every
//! path with or without its trailing slash, artifact paths with slashes) and the emulator's own
//! control routes under `/_emulator/`. Pure: no IO, unit-tested on paths.

use crate::ids::{JobId, RunId, StepId};
use axum::http::Method;

/// An API endpoint with its path parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    TriggerRun(JobId),
    RerunJob(JobId),
    ListRuns,
    GetRun(RunId),
    CancelRun(RunId),
    ListArtifacts(RunId),
    GetArtifact(RunId, String),
    GetStep(StepId),
    GetJob(JobId),
    ListJobs,
    RunFailureDetails(RunId),
    RetryRun(RunId),
    GetAccount,
    /// `GET /api/v2/accounts/`: the accounts the token may see (the path holds no account id).
    ListAccounts,
}

impl Route {
    /// The name under which requests are counted (`EmulatorHandle::request_counts`) and faults
    /// are filtered (`Faults::routes`).
    pub fn name(&self) -> &'static str {
        match self {
            Self::TriggerRun(_) => "trigger_run",
            Self::RerunJob(_) => "rerun_job",
            Self::ListRuns => "list_runs",
            Self::GetRun(_) => "get_run",
            Self::CancelRun(_) => "cancel_run",
            Self::ListArtifacts(_) => "list_artifacts",
            Self::GetArtifact(..) => "get_artifact",
            Self::GetStep(_) => "get_step",
            Self::GetJob(_) => "get_job",
            Self::ListJobs => "list_jobs",
            Self::RunFailureDetails(_) => "run_failure_details",
            Self::RetryRun(_) => "retry_run",
            Self::GetAccount => "get_account",
            Self::ListAccounts => "list_accounts",
        }
    }

    /// Routes that create a run, and so may suffer the "queued, then 502" fault.
    pub fn creates_run(&self) -> bool {
        matches!(
            self,
            Self::TriggerRun(_) | Self::RerunJob(_) | Self::RetryRun(_)
        )
    }
}

/// The emulator's own endpoints, outside the dbt Cloud API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlRoute {
    GetFaults,
    PutFaults,
    RequestCounts,
    Runs,
}

/// The outcome of routing one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// `account` is the account id of the path; `None` only for `ListAccounts`.
    Api {
        account: Option<i64>,
        route: Route,
    },
    Control(ControlRoute),
    /// The path exists but not with this method.
    WrongMethod(&'static str),
    NotFound,
}

/// Name under which unroutable requests are counted.
pub const NOT_FOUND_ROUTE: &str = "not_found";
/// Name under which control requests are counted.
pub const CONTROL_ROUTE: &str = "control";

pub fn resolve(method: &Method, path: &str) -> Resolved {
    if let Some(rest) = path.strip_prefix("/_emulator/") {
        return match (method.as_str(), rest.trim_end_matches('/')) {
            ("GET", "faults") => Resolved::Control(ControlRoute::GetFaults),
            ("PUT" | "POST", "faults") => Resolved::Control(ControlRoute::PutFaults),
            ("GET", "requests") => Resolved::Control(ControlRoute::RequestCounts),
            ("GET", "runs") => Resolved::Control(ControlRoute::Runs),
            _ => Resolved::NotFound,
        };
    }
    if path.trim_end_matches('/') == "/api/v2/accounts" {
        return match *method {
            Method::GET => Resolved::Api {
                account: None,
                route: Route::ListAccounts,
            },
            _ => Resolved::WrongMethod(Route::ListAccounts.name()),
        };
    }
    let Some(rest) = path.strip_prefix("/api/v2/accounts/") else {
        return Resolved::NotFound;
    };
    let mut segments: Vec<&str> = rest.split('/').collect();
    let Some(account) = segments.first().and_then(|s| s.parse::<i64>().ok()) else {
        return Resolved::NotFound;
    };
    segments.remove(0);
    // An artifact path keeps its inner slashes; everything else ignores a trailing slash.
    let artifact = match segments.as_slice() {
        ["runs", id, "artifacts", remainder @ ..] if !remainder.is_empty() => {
            let path = percent_decode(&remainder.join("/"));
            let path = path.trim_end_matches('/');
            (!path.is_empty()).then(|| (id.to_string(), path.to_string()))
        }
        _ => None,
    };
    while segments.last() == Some(&"") {
        segments.pop();
    }
    let get = method == Method::GET;
    let post = method == Method::POST;
    let id = |s: &str| s.parse::<i64>().ok();
    let route = match (segments.as_slice(), artifact) {
        (_, Some((run, path))) => id(&run).map(|r| (get, Route::GetArtifact(RunId(r), path))),
        ([], None) => Some((get, Route::GetAccount)),
        (["runs"], None) => Some((get, Route::ListRuns)),
        (["runs", run], None) => id(run).map(|r| (get, Route::GetRun(RunId(r)))),
        (["runs", run, "cancel"], None) => id(run).map(|r| (post, Route::CancelRun(RunId(r)))),
        (["runs", run, "artifacts"], None) => {
            id(run).map(|r| (get, Route::ListArtifacts(RunId(r))))
        }
        (["runs", run, "retry"], None) => id(run).map(|r| {
            if post {
                (true, Route::RetryRun(RunId(r)))
            } else {
                (get, Route::RunFailureDetails(RunId(r)))
            }
        }),
        (["steps", step], None) => id(step).map(|s| (get, Route::GetStep(StepId(s)))),
        (["jobs"], None) => Some((get, Route::ListJobs)),
        (["jobs", job], None) => id(job).map(|j| (get, Route::GetJob(JobId(j)))),
        (["jobs", job, "run"], None) => id(job).map(|j| (post, Route::TriggerRun(JobId(j)))),
        (["jobs", job, "rerun"], None) => id(job).map(|j| (post, Route::RerunJob(JobId(j)))),
        _ => None,
    };
    match route {
        Some((true, route)) => Resolved::Api {
            account: Some(account),
            route,
        },
        Some((false, route)) => Resolved::WrongMethod(route.name()),
        None => Resolved::NotFound,
    }
}

/// Decodes `%XX` escapes of a path; invalid escapes are kept as they are.
fn percent_decode(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    let hex = |b: u8| (b as char).to_digit(16);
    while i < bytes.len() {
        match (
            bytes[i],
            bytes.get(i + 1).and_then(|&h| hex(h)),
            bytes.get(i + 2).and_then(|&l| hex(l)),
        ) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(method: Method, path: &str) -> Route {
        match resolve(&method, path) {
            Resolved::Api { account, route } => {
                assert_eq!(account, Some(70403103922125));
                route
            }
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn every_route_resolves_with_and_without_trailing_slash() {
        let base = "/api/v2/accounts/70403103922125";
        for slash in ["", "/"] {
            assert_eq!(
                api(Method::POST, &format!("{base}/jobs/5/run{slash}")),
                Route::TriggerRun(JobId(5))
            );
            assert_eq!(
                api(Method::POST, &format!("{base}/jobs/5/rerun{slash}")),
                Route::RerunJob(JobId(5))
            );
            assert_eq!(
                api(Method::GET, &format!("{base}/runs{slash}")),
                Route::ListRuns
            );
            assert_eq!(
                api(Method::GET, &format!("{base}/runs/7{slash}")),
                Route::GetRun(RunId(7))
            );
            assert_eq!(
                api(Method::POST, &format!("{base}/runs/7/cancel{slash}")),
                Route::CancelRun(RunId(7))
            );
            assert_eq!(
                api(Method::GET, &format!("{base}/runs/7/artifacts{slash}")),
                Route::ListArtifacts(RunId(7))
            );
            assert_eq!(
                api(
                    Method::GET,
                    &format!("{base}/runs/7/artifacts/run/a/b.sql{slash}")
                ),
                Route::GetArtifact(RunId(7), "run/a/b.sql".into())
            );
            assert_eq!(
                api(Method::GET, &format!("{base}/steps/9{slash}")),
                Route::GetStep(StepId(9))
            );
            assert_eq!(
                api(Method::GET, &format!("{base}/jobs{slash}")),
                Route::ListJobs
            );
            assert_eq!(
                api(Method::GET, &format!("{base}/jobs/5{slash}")),
                Route::GetJob(JobId(5))
            );
            assert_eq!(
                api(Method::GET, &format!("{base}/runs/7/retry{slash}")),
                Route::RunFailureDetails(RunId(7))
            );
            assert_eq!(
                api(Method::POST, &format!("{base}/runs/7/retry{slash}")),
                Route::RetryRun(RunId(7))
            );
        }
        assert_eq!(
            resolve(&Method::GET, &format!("{base}/jobs/5/run/")),
            Resolved::WrongMethod("trigger_run")
        );
        assert_eq!(
            resolve(&Method::GET, &format!("{base}/runs/x/")),
            Resolved::NotFound
        );
        assert_eq!(
            resolve(&Method::GET, "/api/v2/accounts/abc/runs/"),
            Resolved::NotFound
        );
        assert_eq!(
            resolve(&Method::GET, "/_emulator/requests"),
            Resolved::Control(ControlRoute::RequestCounts)
        );
        assert_eq!(api(Method::GET, &format!("{base}/")), Route::GetAccount);
        assert_eq!(
            api(
                Method::GET,
                &format!("{base}/runs/7/artifacts/run%20results.json")
            ),
            Route::GetArtifact(RunId(7), "run results.json".into())
        );
        assert!(matches!(
            resolve(&Method::GET, "/api/v2/accounts/"),
            Resolved::Api {
                account: None,
                route: Route::ListAccounts
            }
        ));
    }
}
