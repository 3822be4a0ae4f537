//! The client's error taxonomy: what went wrong with a dbt Cloud call, in classes a caller can branch
//! on (`ApiError`), and whether a trigger POST definitely did or did not create a run (`TriggerError`).
//! Also the mapping from an HTTP answer (status, `Retry-After`, body) to an `ApiError`.

use super::wire::ApiStatus;
use crate::ids::RunId;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

/// How many characters of an unexpected body an error keeps.
const EXCERPT_CHARS: usize = 200;

/// A failed dbt Cloud call. Never carries the API token (bodies are scrubbed before they are kept).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    /// 401: the token is wrong, expired or revoked.
    #[error("dbt Cloud rejected the API token (401)")]
    Unauthorized,
    /// 403: typically a token not scoped to this account id (dbt Cloud answers 403, never 404, for a
    /// wrong account).
    #[error("dbt Cloud refused access (403): {message}")]
    Forbidden { message: String },
    /// 404: no such job, run or artifact (an artifact is also 404 while not yet uploaded).
    #[error("dbt Cloud found no such resource (404): {message}")]
    NotFound { message: String },
    /// 400 (or 422): the request was invalid; `fields` maps each offending field to its message.
    #[error(
        "dbt Cloud rejected the request as invalid: {message}{}",
        format_fields(fields)
    )]
    InvalidRequest {
        message: String,
        fields: BTreeMap<String, String>,
    },
    /// 429: the account's request budget at dbt Cloud is spent; the whole account must wait.
    #[error("dbt Cloud rate limit hit (429){}", format_retry_after(retry_after))]
    RateLimited { retry_after: Option<Duration> },
    /// 5xx, or 408: the server (or a load balancer in front of it) did not finish the request. The
    /// body may be HTML or empty.
    #[error("dbt Cloud server error ({status}): {excerpt}")]
    Server { status: u16, excerpt: String },
    /// Any other status outside 2xx: not retried.
    #[error("dbt Cloud answered with unexpected status {status}: {excerpt}")]
    UnexpectedStatus { status: u16, excerpt: String },
    /// Our connect or request timeout elapsed.
    #[error("dbt Cloud request timed out")]
    Timeout,
    /// The connection failed or dropped (DNS, TCP, TLS, reset while reading).
    #[error("transport error talking to dbt Cloud: {0}")]
    Transport(String),
    /// A 2xx answer whose body is not what the endpoint returns.
    #[error("could not decode dbt Cloud's answer as {expected}: {excerpt}")]
    Decode { expected: String, excerpt: String },
    /// A `pk__in` listing did not hold exactly the runs asked for (a server or proxy that ignored the
    /// filter, or runs that no longer exist): the caller falls back to one `get_run` per run.
    #[error(
        "dbt Cloud's pk__in answer did not match the runs asked for: missing {missing:?}, unexpected {unexpected:?}"
    )]
    RunSetMismatch {
        missing: Vec<RunId>,
        unexpected: Vec<RunId>,
    },
    /// The client could not be built or a request could not be formed (bad base URL, say).
    #[error("dbt Cloud client configuration error: {0}")]
    Config(String),
}

impl ApiError {
    /// True when the same request may succeed later: rate limits, server errors, timeouts and
    /// transport failures. Idempotent calls retry these; a caller sees them only once retries are
    /// spent.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::RateLimited { .. } | Self::Server { .. } | Self::Timeout | Self::Transport(_)
        )
    }

    /// The `Retry-After` the server asked for, when it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after } => *retry_after,
            _ => None,
        }
    }

    /// The HTTP status behind this error, when there was an answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Unauthorized => Some(401),
            Self::Forbidden { .. } => Some(403),
            Self::NotFound { .. } => Some(404),
            Self::InvalidRequest { .. } => Some(400),
            Self::RateLimited { .. } => Some(429),
            Self::Server { status, .. } | Self::UnexpectedStatus { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// The outcome of a failed trigger (`jobs/{id}/run/`) or rerun POST, which is not idempotent.
///
/// A 429 is deliberately neither of the first two: dbt Cloud's rate limiter refuses the request
/// before it reaches the job, so nothing was queued. The client waits out the account's cooldown
/// and sends the same body again (that is not a blind retry: the first send provably did nothing),
/// up to `max_retries` times; the same holds for a connection that could not be opened, where no
/// byte of the request left us. Only when those retries are spent does the caller see `NotSent`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TriggerError {
    /// dbt Cloud definitely refused the request (4xx other than 408 and 429, or a body that failed
    /// local validation such as a `cause` over 255 characters): no run exists; the attempt fails.
    #[error("trigger rejected: {0}")]
    Rejected(ApiError),
    /// The request may or may not have queued a run (timeout after sending, 5xx, 408, a connection
    /// dropped after sending, an unreadable 200): the caller reconciles through `list_runs` and the
    /// key in `cause` before it sends again.
    #[error("trigger outcome unknown: {0}")]
    Ambiguous(ApiError),
    /// Nothing was queued (429s or connect failures outlasted the client's retries): the caller may
    /// send again with the same key later; reconciling first is also safe.
    #[error("trigger not sent: {0}")]
    NotSent(ApiError),
}

impl TriggerError {
    /// The underlying API error.
    pub fn api_error(&self) -> &ApiError {
        match self {
            Self::Rejected(e) | Self::Ambiguous(e) | Self::NotSent(e) => e,
        }
    }

    pub fn is_ambiguous(&self) -> bool {
        matches!(self, Self::Ambiguous(_))
    }
}

fn format_fields(fields: &BTreeMap<String, String>) -> String {
    if fields.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = fields.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    format!(" ({})", parts.join("; "))
}

fn format_retry_after(retry_after: &Option<Duration>) -> String {
    match retry_after {
        Some(d) => format!(", retry after {}s", d.as_secs()),
        None => String::new(),
    }
}

/// Replaces every occurrence of the token in `text`, so a server that echoes the request back can
/// never put the token into an error or a log line.
pub(crate) fn scrub(text: &str, token: &str) -> String {
    if token.is_empty() {
        text.to_string()
    } else {
        text.replace(token, "***")
    }
}

/// The first characters of a body, whitespace collapsed, for error messages. Empty bodies say so.
pub(crate) fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let collapsed: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if collapsed.is_empty() {
        return "(empty body)".to_string();
    }
    let mut out: String = collapsed.chars().take(EXCERPT_CHARS).collect();
    if collapsed.chars().count() > EXCERPT_CHARS {
        out.push('…');
    }
    out
}

/// The error an answer with status `status` (not 2xx) and body `body` means. `retry_after` is the
/// already-parsed `Retry-After` header.
pub fn error_from_response(status: u16, retry_after: Option<Duration>, body: &[u8]) -> ApiError {
    let envelope: Option<ErrorEnvelope> = serde_json::from_slice(body).ok();
    let message = envelope
        .as_ref()
        .and_then(|e| e.status.as_ref())
        .map(status_message)
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| excerpt(body));
    match status {
        401 => ApiError::Unauthorized,
        403 => ApiError::Forbidden { message },
        404 => ApiError::NotFound { message },
        400 | 422 => ApiError::InvalidRequest {
            message,
            fields: envelope
                .and_then(|e| e.data)
                .map(field_messages)
                .unwrap_or_default(),
        },
        429 => ApiError::RateLimited { retry_after },
        408 | 500..=599 => ApiError::Server {
            status,
            excerpt: message,
        },
        _ => ApiError::UnexpectedStatus {
            status,
            excerpt: message,
        },
    }
}

/// The error envelope, read loosely: a 4xx from a proxy may have any shape.
#[derive(serde::Deserialize)]
struct ErrorEnvelope {
    #[serde(default)]
    status: Option<ApiStatus>,
    #[serde(default)]
    data: Option<Value>,
}

fn status_message(status: &ApiStatus) -> String {
    let user = status.user_message.as_deref().unwrap_or("").trim();
    let developer = status.developer_message.as_deref().unwrap_or("").trim();
    match (user.is_empty(), developer.is_empty()) {
        (false, false) if user != developer => format!("{user} ({developer})"),
        (false, _) => user.to_string(),
        (true, _) => developer.to_string(),
    }
}

/// `data` of a 400: `{"field": "message"}`, where a message may also be a list or an object.
fn field_messages(data: Value) -> BTreeMap<String, String> {
    let Value::Object(map) = data else {
        return BTreeMap::new();
    };
    map.into_iter()
        .map(|(field, message)| (field, flatten_message(&message)))
        .collect()
}

fn flatten_message(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .map(flatten_message)
            .collect::<Vec<_>>()
            .join("; "),
        other => other.to_string(),
    }
}

/// Parses `Retry-After`: delay-seconds, or an HTTP date (measured against `now`).
pub fn parse_retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    if let Ok(seconds) = value.parse::<f64>() {
        if seconds.is_finite() && seconds >= 0.0 {
            // Finite and not negative, so only "too big for a Duration" fails: wait the longest.
            return Some(Duration::try_from_secs_f64(seconds).unwrap_or(Duration::MAX));
        }
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        (at.with_timezone(&chrono::Utc) - now)
            .to_std()
            .unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_statuses() {
        assert_eq!(error_from_response(401, None, b""), ApiError::Unauthorized);
        assert!(matches!(
            error_from_response(502, None, b"<html><body>Bad Gateway</body></html>"),
            ApiError::Server { status: 502, ref excerpt } if excerpt.contains("Bad Gateway")
        ));
        assert!(matches!(
            error_from_response(503, None, b""),
            ApiError::Server { status: 503, ref excerpt } if excerpt == "(empty body)"
        ));
        assert!(matches!(
            error_from_response(418, None, b"teapot"),
            ApiError::UnexpectedStatus { status: 418, .. }
        ));
        let e = error_from_response(400, None, br#"{"status":{"code":400,"is_success":false,"user_message":"bad","developer_message":""},"data":{"limit":["too big","really"]}}"#);
        assert_eq!(
            e,
            ApiError::InvalidRequest {
                message: "bad".into(),
                fields: [("limit".to_string(), "too big; really".to_string())].into(),
            }
        );
        assert!(!e.is_transient());
        assert!(ApiError::Timeout.is_transient());
    }

    #[test]
    fn parses_retry_after_both_ways() {
        let now = chrono::DateTime::parse_from_rfc3339("2015-10-21T07:27:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn excerpt_is_bounded_and_scrub_hides_the_token() {
        let long = "x".repeat(1000);
        assert!(excerpt(long.as_bytes()).chars().count() <= EXCERPT_CHARS + 1);
        assert_eq!(scrub("token abc123 echoed", "abc123"), "token *** echoed");
    }
}
