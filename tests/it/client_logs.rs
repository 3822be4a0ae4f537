//! What the client logs and shows. The API token never leaks: not into debug-level logs of a full
//! exchange, not into any error's `Display` or `Debug`, not into `Debug` of the config or the
//! client, even when a hostile server echoes the `Authorization` header back in its bodies. And a
//! run status code outside the documented six is kept and logged as a warning.

#![allow(clippy::unwrap_used)] // tests may unwrap; clippy only knows that inside #[test] functions

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use baton::dbt_cloud::wire::{RunStatus, TriggerRequest};
use baton::dbt_cloud::{ClientConfig, DbtCloudClient, ListRuns};
use baton::ids::{AccountId, JobId, RunId};
use baton::secret::Secret;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const TOKEN: &str = "dbtc_S3CRET-token-value-0123456789";

/// A `MakeWriter` that appends every log line to one buffer.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Buffer {
    type Writer = Buffer;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

fn echoed(headers: &HeaderMap) -> String {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// A server that puts the caller's `Authorization` header into every kind of body the client keeps.
fn hostile_routes() -> Router {
    Router::new()
        .route(
            "/api/v2/accounts/7/runs/1/",
            get(|h: HeaderMap| async move {
                (
                    StatusCode::BAD_GATEWAY,
                    format!("<html>upstream said {}</html>", echoed(&h)),
                )
            }),
        )
        .route(
            "/api/v2/accounts/7/runs/2/",
            get(|h: HeaderMap| async move {
                (StatusCode::OK, format!("not json {}", echoed(&h)))
            }),
        )
        .route(
            "/api/v2/accounts/7/runs/3/",
            get(|h: HeaderMap| async move {
                let body = serde_json::json!({
                    "status": {"code": 403, "is_success": false, "user_message": echoed(&h), "developer_message": echoed(&h)},
                    "data": null,
                });
                (StatusCode::FORBIDDEN, axum::Json(body)).into_response()
            }),
        )
        .route(
            "/api/v2/accounts/7/runs/",
            get(|h: HeaderMap| async move {
                let body = serde_json::json!({
                    "status": {"code": 400, "is_success": false, "user_message": "invalid", "developer_message": ""},
                    "data": {"limit": echoed(&h)},
                });
                (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
            }),
        )
        .route(
            "/api/v2/accounts/7/jobs/5/run/",
            post(|h: HeaderMap| async move {
                (StatusCode::SERVICE_UNAVAILABLE, echoed(&h))
            }),
        )
        .route(
            "/api/v2/accounts/7/jobs/6/",
            get(|| async { StatusCode::UNAUTHORIZED }),
        )
        .route(
            "/api/v2/accounts/7/jobs/8/",
            get(|h: HeaderMap| async move {
                let agent = h.get("user-agent").and_then(|v| v.to_str().ok()).unwrap_or("");
                let body = serde_json::json!({
                    "status": {"code": 404, "is_success": false, "user_message": format!("{agent} | {}", echoed(&h)), "developer_message": ""},
                    "data": null,
                });
                (StatusCode::NOT_FOUND, axum::Json(body)).into_response()
            }),
        )
        .route(
            "/api/v2/accounts/7/runs/4/",
            get(|| async {
                let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("tests/data/client/run_unknown_status.json");
                (
                    [("content-type", "application/json")],
                    std::fs::read(path).unwrap(),
                )
            }),
        )
}

fn capture_logs() -> (Buffer, tracing::subscriber::DefaultGuard) {
    let logs = Buffer::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(logs.clone())
        .with_ansi(false)
        .finish();
    (logs, tracing::subscriber::set_default(subscriber))
}

async fn serve_hostile() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, hostile_routes()).await });
    base
}

impl Buffer {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

fn config(base: &str) -> ClientConfig {
    let mut config = ClientConfig::new(base.parse().unwrap(), AccountId(7), Secret::new(TOKEN));
    config.max_retries = 1;
    config.retry_base_delay = Duration::from_millis(1);
    config.retry_max_delay = Duration::from_millis(2);
    config.request_timeout = Duration::from_secs(5);
    config
}

#[tokio::test]
async fn the_token_never_appears_in_logs_errors_or_debug_output() {
    let (logs, _guard) = capture_logs();
    let base = serve_hostile().await;

    let client = DbtCloudClient::new(config(&base)).unwrap();
    let mut rendered = vec![format!("{client:?}"), format!("{:?}", config(&base))];
    let mut errors = Vec::new();
    errors.push(client.get_run(RunId(1), &[]).await.unwrap_err());
    errors.push(client.get_run(RunId(2), &[]).await.unwrap_err());
    errors.push(client.get_run(RunId(3), &[]).await.unwrap_err());
    errors.push(client.list_runs(&ListRuns::default()).await.unwrap_err());
    errors.push(client.get_job(JobId(6)).await.unwrap_err());
    let trigger_error = client
        .trigger(
            JobId(5),
            &TriggerRequest {
                cause: "secrecy test".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(trigger_error.is_ambiguous(), "{trigger_error:?}");
    rendered.push(format!("{trigger_error}"));
    rendered.push(format!("{trigger_error:?}"));

    // Nothing listens on this port any more: a transport error.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let unreachable = DbtCloudClient::new(config(&closed)).unwrap();
    errors.push(unreachable.get_run(RunId(1), &[]).await.unwrap_err());

    assert_eq!(errors.len(), 6);
    for error in &errors {
        rendered.push(format!("{error}"));
        rendered.push(format!("{error:?}"));
    }
    for text in &rendered {
        assert!(!text.contains(TOKEN), "token leaked into: {text}");
        assert!(
            !text.contains("S3CRET"),
            "part of the token leaked into: {text}"
        );
    }
    // The hostile server did echo it: the scrubbing is what kept it out.
    assert!(
        rendered.iter().any(|t| t.contains("Token ***")),
        "the echoed header should show up scrubbed: {rendered:#?}"
    );

    let logs = logs.text();
    assert!(
        logs.contains("dbt Cloud request") && logs.contains("/api/v2/accounts/7/runs/1/"),
        "requests were not logged at debug level:\n{logs}"
    );
    assert!(
        !logs.contains("S3CRET"),
        "token leaked into the logs:\n{logs}"
    );
}

#[tokio::test]
async fn an_unknown_status_code_is_kept_and_warned_about() {
    let (logs, _guard) = capture_logs();
    let client = DbtCloudClient::new(config(&serve_hostile().await)).unwrap();
    let run = client.get_run(RunId(4), &[]).await.unwrap();
    assert_eq!(run.status, RunStatus::Unknown(42));
    assert!(!run.status.is_terminal());
    let logs = logs.text();
    let warning = logs
        .lines()
        .find(|line| line.contains("WARN") && line.contains("unknown run status"))
        .unwrap_or_else(|| panic!("no warning about status 42:\n{logs}"));
    assert!(warning.contains("status=42"), "{warning}");
    assert!(warning.contains("run_id=70403110257794"), "{warning}");
}

#[tokio::test]
async fn requests_carry_the_baton_user_agent_and_a_token_authorization() {
    let client = DbtCloudClient::new(config(&serve_hostile().await)).unwrap();
    let error = client.get_job(JobId(8)).await.unwrap_err();
    let want = format!("baton/{} | Token ***", env!("CARGO_PKG_VERSION"));
    assert!(
        matches!(&error, baton::dbt_cloud::ApiError::NotFound { message } if *message == want),
        "{error:?}"
    );
}
