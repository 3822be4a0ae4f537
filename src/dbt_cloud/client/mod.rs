//! `DbtCloudClient`: typed calls to the dbt Cloud Administrative API v2 for one account, sharing that
//! account's `RequestBudget`. Decoding is tolerant (see `wire`); errors are classed (see `error`).
//!
//! Retry rules: reads and cancel retry transient failures (transport, timeout, 408, 429, 5xx) up to
//! `max_retries` times with jittered exponential backoff, honouring `Retry-After`; a 429 also puts
//! the whole account into a cooldown through the budget. Trigger and rerun are re-sent only after a
//! 429 (refused by the rate limiter, so nothing was queued) or a connection that never opened; every
//! other failure after sending is `TriggerError::Ambiguous` for the caller to reconcile. Every wait
//! runs on the budget's clock, and every future here is safe to drop: a dropped trigger is at worst
//! ambiguous, which the caller's restart reconciliation already covers.

mod jobs;
mod query;
mod runs;
mod transport;

pub use query::{include_related_value, ListRuns, Related, MAX_PAGE_SIZE};

use super::budget::RequestBudget;
use super::error::{excerpt, scrub, ApiError, TriggerError};
use super::wire::{Envelope, Extra, Job, Run, RunStatus, TriggerRequest, MAX_CAUSE_CHARS};
use crate::ids::{AccountId, JobId, RunId};
use crate::secret::Secret;
use reqwest::header::HeaderValue;
use reqwest::Method;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// How to reach one dbt Cloud account.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `https://cloud.getdbt.com`, `https://emea.dbt.com`, `https://<prefix>.us1.dbt.com`, or an
    /// emulator's `http://127.0.0.1:PORT`. A path prefix is kept.
    pub base_url: Url,
    pub account_id: AccountId,
    pub token: Secret,
    /// The account's budget when the client makes its own (`DbtCloudClient::new`).
    pub requests_per_minute: u32,
    pub connect_timeout: Duration,
    /// For the whole exchange, body included.
    pub request_timeout: Duration,
    /// Retries after the first attempt, for idempotent calls (and for a trigger that provably did
    /// not reach the job).
    pub max_retries: u32,
    pub retry_base_delay: Duration,
    pub retry_max_delay: Duration,
}

impl ClientConfig {
    /// The defaults: 1,000 requests a minute (a fifth of dbt Cloud's limit), 10 s to connect, 30 s a
    /// request, 4 retries from 500 ms up to 30 s.
    pub fn new(base_url: Url, account_id: AccountId, token: Secret) -> Self {
        Self {
            base_url,
            account_id,
            token,
            requests_per_minute: 1000,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_retries: 4,
            retry_base_delay: Duration::from_millis(500),
            retry_max_delay: Duration::from_secs(30),
        }
    }
}

/// A client for one account. Cheap to clone; clones share one connection pool and one budget.
#[derive(Clone)]
pub struct DbtCloudClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    config: ClientConfig,
    token: Secret,
    /// `Token <secret>`, marked sensitive so that HTTP libraries never print it.
    authorization: HeaderValue,
    budget: Arc<RequestBudget>,
    /// `<base>/api/v2/accounts/<id>/`, as path segments to extend.
    account_root: Url,
    /// Told of every answered request (metrics).
    observer: std::sync::RwLock<Option<ApiObserver>>,
    /// When a request last got a 2xx answer: readiness reuses it instead of asking again.
    last_success: std::sync::Mutex<Option<tokio::time::Instant>>,
    /// Requests on the wire at once: a burst of triggers or a thousand runs in flight must not
    /// open a connection (and its buffers) each, here or at dbt Cloud.
    connections: tokio::sync::Semaphore,
}

/// Most requests a client has on the wire at once (and idle connections it keeps).
pub const MAX_CONCURRENT_REQUESTS: usize = 16;

/// Called with the endpoint (a route such as `runs/{id}`, never a URL with ids) and the HTTP status
/// of every request, 0 when no answer came.
pub type ApiObserver = Arc<dyn Fn(&str, u16) + Send + Sync>;

impl std::fmt::Debug for DbtCloudClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbtCloudClient")
            .field("base_url", &self.inner.config.base_url.as_str())
            .field("account_id", &self.inner.config.account_id)
            .field("token", &self.inner.token)
            .field("budget", &self.inner.budget)
            .finish()
    }
}

impl DbtCloudClient {
    /// A client with its own budget of `config.requests_per_minute` on the system clock.
    pub fn new(config: ClientConfig) -> Result<Self, ApiError> {
        let budget = Arc::new(RequestBudget::system(config.requests_per_minute));
        Self::with_budget(config, budget)
    }

    /// A client drawing on `budget`, shared by every client of the same account. The budget's rate
    /// wins over `config.requests_per_minute`, and its clock times every wait.
    pub fn with_budget(config: ClientConfig, budget: Arc<RequestBudget>) -> Result<Self, ApiError> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("baton/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            // A redirected POST turns into a GET; dbt Cloud's API does not redirect, so refuse.
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(MAX_CONCURRENT_REQUESTS)
            .build()
            .map_err(|e| ApiError::Config(format!("cannot build the HTTP client: {e}")))?;
        let mut account_root = config.base_url.clone();
        account_root
            .path_segments_mut()
            .map_err(|()| {
                ApiError::Config(format!("base URL {} cannot hold a path", config.base_url))
            })?
            .pop_if_empty()
            .extend(["api", "v2", "accounts", &config.account_id.to_string()]);
        let mut authorization = HeaderValue::from_str(&format!("Token {}", config.token.expose()))
            .map_err(|_| {
                ApiError::Config(
                    "the API token holds characters not allowed in an HTTP header".into(),
                )
            })?;
        authorization.set_sensitive(true);
        account_root.set_query(None);
        account_root.set_fragment(None);
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                token: config.token.clone(),
                authorization,
                config,
                budget,
                account_root,
                observer: std::sync::RwLock::new(None),
                last_success: std::sync::Mutex::new(None),
                connections: tokio::sync::Semaphore::new(MAX_CONCURRENT_REQUESTS),
            }),
        })
    }

    pub fn account_id(&self) -> AccountId {
        self.inner.config.account_id
    }

    pub fn budget(&self) -> &Arc<RequestBudget> {
        &self.inner.budget
    }

    /// Whether a request of this client or a clone got a 2xx answer within `window`.
    pub fn answered_within(&self, window: Duration) -> bool {
        self.inner
            .last_success
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|at| at.elapsed() < window)
    }

    /// Tells `observer` of every request this client and its clones make from now on.
    pub fn set_api_observer(&self, observer: ApiObserver) {
        *self
            .inner
            .observer
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(observer);
    }

    /// `POST jobs/{job}/run/`. Never re-sent once it may have reached dbt Cloud: see `TriggerError`.
    /// A `cause` that is empty or longer than 255 characters is rejected here, unsent.
    pub async fn trigger(&self, job: JobId, body: &TriggerRequest) -> Result<Run, TriggerError> {
        let cause_chars = body.cause.chars().count();
        if cause_chars == 0 || cause_chars > MAX_CAUSE_CHARS {
            return Err(TriggerError::Rejected(ApiError::InvalidRequest {
                message: "cause must be 1 to 255 characters".to_string(),
                fields: BTreeMap::from([(
                    "cause".to_string(),
                    format!("{cause_chars} characters; dbt Cloud accepts 1 to {MAX_CAUSE_CHARS}"),
                )]),
            }));
        }
        let payload = serde_json::to_vec(body).map_err(|e| {
            TriggerError::Rejected(ApiError::Config(format!("cannot encode the trigger: {e}")))
        })?;
        let url = self.url(&["jobs", &job.to_string(), "run", ""]);
        self.created_run(url, &payload).await
    }

    /// `POST jobs/{job}/rerun/`: from the failed step when the job's latest run failed and can be
    /// retried, a full run otherwise. Same outcome rules as `trigger`.
    pub async fn rerun(&self, job: JobId) -> Result<Run, TriggerError> {
        let url = self.url(&["jobs", &job.to_string(), "rerun", ""]);
        self.created_run(url, b"{}").await
    }

    async fn created_run(&self, url: Url, payload: &[u8]) -> Result<Run, TriggerError> {
        let body = self.call_creating_run(url, payload).await?;
        // A 2xx we cannot read still created a run: only reconciliation can find it.
        self.decode_run(&body).map_err(TriggerError::Ambiguous)
    }

    /// `GET runs/{run}/`, with the related objects asked for.
    pub async fn get_run(&self, run: RunId, include: &[Related]) -> Result<Run, ApiError> {
        let mut url = self.url(&["runs", &run.to_string(), ""]);
        if let Some(related) = include_related_value(include) {
            url.query_pairs_mut()
                .append_pair("include_related", &related);
        }
        let body = self.call(Method::GET, url, None).await?;
        self.decode_run(&body)
    }

    /// `POST runs/{run}/cancel/`. Idempotent (cancelling a finished run returns it unchanged), so it
    /// is retried like a GET. A queued run comes back already cancelled (30); a running one may
    /// still show 3 until a later look.
    pub async fn cancel_run(&self, run: RunId) -> Result<Run, ApiError> {
        let url = self.url(&["runs", &run.to_string(), "cancel", ""]);
        let body = self.call(Method::POST, url, Some(b"{}")).await?;
        self.decode_run(&body)
    }

    /// `GET runs/{run}/artifacts/`: the paths of the run's artifacts (of `step`, when given).
    pub async fn list_artifacts(
        &self,
        run: RunId,
        step: Option<i64>,
    ) -> Result<Vec<String>, ApiError> {
        let mut url = self.url(&["runs", &run.to_string(), "artifacts", ""]);
        if let Some(step) = step {
            url.query_pairs_mut().append_pair("step", &step.to_string());
        }
        let body = self.call(Method::GET, url, None).await?;
        let (paths, _) = self.decode::<Vec<String>>(&body, "a list of artifact paths")?;
        Ok(paths)
    }

    /// `GET runs/{run}/artifacts/{path}`: the raw file (no envelope). 404 while it is not uploaded.
    pub async fn get_artifact(
        &self,
        run: RunId,
        path: &str,
        step: Option<i64>,
    ) -> Result<Vec<u8>, ApiError> {
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        if parts
            .iter()
            .any(|p| p.is_empty() || *p == "." || *p == "..")
        {
            return Err(ApiError::InvalidRequest {
                message: format!("artifact path {path:?} is not a relative file path"),
                fields: BTreeMap::new(),
            });
        }
        let run = run.to_string();
        let mut segments = vec!["runs", run.as_str(), "artifacts"];
        segments.extend(parts);
        let mut url = self.url(&segments);
        if let Some(step) = step {
            url.query_pairs_mut().append_pair("step", &step.to_string());
        }
        self.call(Method::GET, url, None).await
    }

    /// `GET <account>/`: the account answers (what readiness asks; nothing is decoded).
    pub async fn check_account(&self) -> Result<(), ApiError> {
        self.call(Method::GET, self.url(&[""]), None).await?;
        Ok(())
    }

    /// `GET jobs/{job}/`.
    pub async fn get_job(&self, job: JobId) -> Result<Job, ApiError> {
        let url = self.url(&["jobs", &job.to_string(), ""]);
        let body = self.call(Method::GET, url, None).await?;
        let (job, _) = self.decode::<Job>(&body, "a job")?;
        Ok(job)
    }

    /// `<account root>/<segments...>`; a trailing `""` segment writes the trailing slash dbt Cloud
    /// expects on collection and object paths.
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.inner.account_root.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.extend(segments);
        }
        url
    }

    fn decode_run(&self, body: &[u8]) -> Result<Run, ApiError> {
        let (run, _) = self.decode::<Run>(body, "a run")?;
        warn_unknown_status(&run);
        Ok(run)
    }

    fn decode<T: DeserializeOwned>(
        &self,
        body: &[u8],
        expected: &str,
    ) -> Result<(T, Option<Extra>), ApiError> {
        decode_enveloped(body, expected).map_err(|e| match e {
            ApiError::Decode { expected, excerpt } => ApiError::Decode {
                expected,
                excerpt: scrub(&excerpt, self.inner.token.expose()),
            },
            other => other,
        })
    }
}

/// Reads a 2xx answer's envelope as the client does: `data` as `T` (tolerantly, see `wire`) and the
/// list `extra`; `data: null` is a decode error. `expected` names `T` in the error.
pub fn decode_enveloped<T: DeserializeOwned>(
    body: &[u8],
    expected: &str,
) -> Result<(T, Option<Extra>), ApiError> {
    let decode_error = |detail: String| ApiError::Decode {
        expected: expected.to_string(),
        excerpt: format!("{detail}; body: {}", excerpt(body)),
    };
    let envelope: Envelope<T> =
        serde_json::from_slice(body).map_err(|e| decode_error(e.to_string()))?;
    match envelope.data {
        Some(data) => Ok((data, envelope.extra)),
        None => Err(decode_error("`data` is null".to_string())),
    }
}

/// Status codes outside the documented six are kept and treated as not terminal; say so once per
/// sighting so an API change does not go unnoticed.
fn warn_unknown_status(run: &Run) {
    if let RunStatus::Unknown(code) = run.status {
        tracing::warn!(
            run_id = run.id.0,
            status = code,
            "dbt Cloud reported an unknown run status code; treating the run as not finished"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(base: &str, token: &str) -> ClientConfig {
        ClientConfig::new(base.parse().unwrap(), AccountId(7), Secret::new(token))
    }

    #[test]
    fn paths_keep_a_base_prefix_and_end_with_a_slash() {
        let client = DbtCloudClient::new(config("https://proxy.example/dbt/", "t")).unwrap();
        assert_eq!(
            client.url(&["runs", "70403110257794", ""]).as_str(),
            "https://proxy.example/dbt/api/v2/accounts/7/runs/70403110257794/"
        );
        let client = DbtCloudClient::new(config("http://127.0.0.1:9", "t")).unwrap();
        assert_eq!(
            client
                .url(&["runs", "1", "artifacts", "run results.json"])
                .as_str(),
            "http://127.0.0.1:9/api/v2/accounts/7/runs/1/artifacts/run%20results.json"
        );
    }

    #[test]
    fn a_token_unfit_for_a_header_is_refused_up_front_without_echoing_it() {
        let error =
            DbtCloudClient::new(config("https://cloud.getdbt.com", "abc\ndef")).unwrap_err();
        assert!(matches!(error, ApiError::Config(_)), "{error:?}");
        assert!(!error.to_string().contains("abc"));
    }
}
