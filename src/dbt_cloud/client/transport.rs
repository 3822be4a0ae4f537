//! One HTTP exchange with dbt Cloud and the two retry disciplines built on it: idempotent calls
//! (GET, cancel) retry transient failures with jittered exponential backoff; the trigger POST is
//! re-sent only when the first send provably did nothing (a 429 or a connection never opened).

use super::DbtCloudClient;
use crate::dbt_cloud::budget::MAX_COOLDOWN;
use crate::dbt_cloud::error::{
    error_from_response, parse_retry_after, scrub, ApiError, TriggerError,
};
use rand::Rng;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::Method;
use std::time::Duration;
use url::Url;

/// A complete answer: status, `Retry-After` and the whole body.
pub(super) struct Answer {
    pub status: u16,
    pub retry_after: Option<Duration>,
    pub body: Vec<u8>,
}

impl Answer {
    fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// A failed exchange, split by whether any of the request can have reached the server.
enum Failure {
    /// The connection was never opened: nothing was sent.
    NotSent(ApiError),
    /// The request may have been received: timeout or a connection lost after sending.
    Lost(ApiError),
}

impl Failure {
    fn into_error(self) -> ApiError {
        match self {
            Self::NotSent(e) | Self::Lost(e) => e,
        }
    }
}

impl DbtCloudClient {
    /// Sends one request (after taking a token from the account's budget) and reads the whole body.
    async fn exchange(
        &self,
        method: &Method,
        url: &Url,
        body: Option<&[u8]>,
        attempt: u32,
    ) -> Result<Answer, Failure> {
        self.inner.budget.acquire().await;
        // Held until the body is read; the semaphore is never closed, so this always waits.
        let _on_the_wire = self.inner.connections.acquire().await.ok();
        let started = tokio::time::Instant::now();
        let mut request = self
            .inner
            .http
            .request(method.clone(), url.clone())
            .header(AUTHORIZATION, self.inner.authorization.clone());
        if let Some(body) = body {
            request = request
                .header(CONTENT_TYPE, "application/json")
                .body(body.to_vec());
        }
        let outcome = match request.send().await {
            Err(e) => Err(self.classify(&e)),
            Ok(response) => {
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, self.inner.budget.clock().now()));
                match response.bytes().await {
                    Ok(bytes) => Ok(Answer {
                        status,
                        retry_after,
                        body: bytes.to_vec(),
                    }),
                    // The status line came back, so the server had the request.
                    Err(e) => Err(Failure::Lost(self.classify(&e).into_error())),
                }
            }
        };
        let elapsed_ms = started.elapsed().as_millis() as u64;
        if outcome.as_ref().is_ok_and(Answer::is_success) {
            *self
                .inner
                .last_success
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(tokio::time::Instant::now());
        }
        if let Some(observe) = self
            .inner
            .observer
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            let status = outcome.as_ref().map_or(0, |answer| answer.status);
            observe(&endpoint_name(url), status);
        }
        let path = path_and_query(url);
        match &outcome {
            Ok(answer) => tracing::debug!(
                method = %method, path = %path, status = answer.status, elapsed_ms, attempt,
                "dbt Cloud request"
            ),
            Err(failure) => {
                let (sent, error) = match failure {
                    Failure::NotSent(e) => (false, e),
                    Failure::Lost(e) => (true, e),
                };
                tracing::debug!(
                    method = %method, path = %path, elapsed_ms, attempt, sent, error = %error,
                    "dbt Cloud request failed"
                );
            }
        }
        outcome
    }

    fn classify(&self, e: &reqwest::Error) -> Failure {
        let error = if e.is_timeout() {
            ApiError::Timeout
        } else {
            ApiError::Transport(scrub(&error_chain(e), self.inner.token.expose()))
        };
        if e.is_connect() {
            Failure::NotSent(error)
        } else {
            Failure::Lost(error)
        }
    }

    /// An idempotent call: retried on transient failures up to `max_retries` times. Returns the
    /// body of the 2xx answer.
    pub(super) async fn call(
        &self,
        method: Method,
        url: Url,
        body: Option<&[u8]>,
    ) -> Result<Vec<u8>, ApiError> {
        let max_retries = self.inner.config.max_retries;
        let mut attempt = 0;
        loop {
            let (error, retry_after) = match self.exchange(&method, &url, body, attempt).await {
                Ok(answer) if answer.is_success() => return Ok(answer.body),
                Ok(answer) => (self.answer_error(&answer), answer.retry_after),
                Err(failure) => (failure.into_error(), None),
            };
            if let ApiError::RateLimited { retry_after } = &error {
                self.inner.budget.on_rate_limited(*retry_after);
            }
            if !error.is_transient() || attempt >= max_retries {
                return Err(error);
            }
            // After a 429 the budget's cooldown is the wait; otherwise back off.
            if !matches!(error, ApiError::RateLimited { .. }) {
                let delay = self
                    .backoff(attempt)
                    .max(retry_after.unwrap_or_default().min(MAX_COOLDOWN));
                tracing::debug!(
                    method = %method, path = %path_and_query(&url), attempt,
                    delay_ms = delay.as_millis() as u64, error = %error,
                    "retrying dbt Cloud request"
                );
                self.sleep(delay).await;
            }
            attempt += 1;
        }
    }

    /// A non-idempotent POST that creates a run (trigger or rerun).
    pub(super) async fn call_creating_run(
        &self,
        url: Url,
        body: &[u8],
    ) -> Result<Vec<u8>, TriggerError> {
        let max_retries = self.inner.config.max_retries;
        let mut attempt = 0;
        loop {
            let not_sent = match self
                .exchange(&Method::POST, &url, Some(body), attempt)
                .await
            {
                Ok(answer) if answer.is_success() => return Ok(answer.body),
                Ok(answer) => {
                    let error = self.answer_error(&answer);
                    match &error {
                        // Refused by the rate limiter before reaching the job: nothing queued.
                        ApiError::RateLimited { retry_after } => {
                            self.inner.budget.on_rate_limited(*retry_after);
                            error
                        }
                        ApiError::Server { .. } => return Err(TriggerError::Ambiguous(error)),
                        _ => return Err(TriggerError::Rejected(error)),
                    }
                }
                Err(Failure::Lost(error)) => return Err(TriggerError::Ambiguous(error)),
                Err(Failure::NotSent(error)) => {
                    if attempt < max_retries {
                        self.sleep(self.backoff(attempt)).await;
                    }
                    error
                }
            };
            if attempt >= max_retries {
                return Err(TriggerError::NotSent(not_sent));
            }
            tracing::debug!(
                path = %path_and_query(&url), attempt, error = %not_sent,
                "sending the trigger again: the previous send created nothing"
            );
            attempt += 1;
        }
    }

    fn answer_error(&self, answer: &Answer) -> ApiError {
        let body = scrub(
            &String::from_utf8_lossy(&answer.body),
            self.inner.token.expose(),
        );
        let error = error_from_response(answer.status, answer.retry_after, body.as_bytes());
        tracing::debug!(status = answer.status, error = %error, "dbt Cloud answered with an error");
        error
    }

    /// Exponential from `retry_base_delay`, capped at `retry_max_delay`, with equal jitter (half
    /// fixed, half random) so that clients hit by one outage do not come back in step.
    fn backoff(&self, attempt: u32) -> Duration {
        let config = &self.inner.config;
        let exponential = config
            .retry_base_delay
            .saturating_mul(2u32.saturating_pow(attempt.min(20)));
        let capped = exponential.min(config.retry_max_delay);
        let half = capped / 2;
        let jitter = rand::thread_rng().gen_range(0.0..=1.0);
        half + half.mul_f64(jitter)
    }

    async fn sleep(&self, delay: Duration) {
        let clock = self.inner.budget.clock();
        let deadline = clock.now()
            + chrono::Duration::from_std(delay).unwrap_or_else(|_| chrono::Duration::seconds(60));
        clock.sleep_until(deadline).await;
    }
}

/// The request target for logs: path and query only (the token travels in a header, never here).
/// The route of a request, with ids as `{id}`: `runs/{id}`, `jobs/{id}/run`, `runs/{id}/artifacts`
/// (artifact paths dropped), so that metrics labels stay bounded.
pub(super) fn endpoint_name(url: &Url) -> String {
    let mut segments = url
        .path_segments()
        .into_iter()
        .flatten()
        .filter(|s| !s.is_empty());
    // Skip everything up to and including `accounts/<id>`.
    let mut route = Vec::new();
    let mut after_account = false;
    while let Some(segment) = segments.next() {
        if !after_account {
            if segment == "accounts" {
                segments.next();
                after_account = true;
            }
            continue;
        }
        let is_id = segment.chars().all(|c| c.is_ascii_digit());
        route.push(if is_id { "{id}" } else { segment });
        if segment == "artifacts" {
            break;
        }
    }
    route.join("/")
}

fn path_and_query(url: &Url) -> String {
    match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_string(),
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let part = inner.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = inner.source();
    }
    text
}

#[cfg(test)]
mod endpoint_tests {
    use super::endpoint_name;

    #[test]
    fn endpoint_names_hide_ids_and_artifact_paths() {
        let name = |u: &str| endpoint_name(&url::Url::parse(u).unwrap());
        assert_eq!(name("https://x/api/v2/accounts/7/runs/123/"), "runs/{id}");
        assert_eq!(
            name("https://x/api/v2/accounts/7/jobs/5/run/"),
            "jobs/{id}/run"
        );
        assert_eq!(name("https://x/api/v2/accounts/7/runs/?pk__in=[1]"), "runs");
        assert_eq!(
            name("https://x/api/v2/accounts/7/runs/9/artifacts/run/a/b.sql"),
            "runs/{id}/artifacts"
        );
    }
}
