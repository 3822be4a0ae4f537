//! The operator commands pointed at a standby of an HA deployment: the standby answers the API
//! with `307` to the leader's address, and the CLI asks the leader, token included.

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use baton::cli::api_client::{ApiClient, ControlArgs};

async fn serve(router: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

#[tokio::test]
async fn the_cli_follows_a_standby_to_the_leader_with_its_token() {
    let leader = serve(axum::Router::new().route(
        "/api/v1/pipelines",
        get(|headers: HeaderMap| async move {
            if headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                == Some("Bearer cli-test-token")
            {
                (
                    StatusCode::OK,
                    axum::Json(serde_json::json!({ "answered_by": "leader" })),
                )
            } else {
                (
                    StatusCode::UNAUTHORIZED,
                    axum::Json(serde_json::json!({ "error": "token" })),
                )
            }
        }),
    ))
    .await;
    let standby = serve(
        axum::Router::new().fallback(move |uri: axum::http::Uri| async move {
            let location = format!("http://{leader}{uri}");
            (
                StatusCode::TEMPORARY_REDIRECT,
                [(header::LOCATION, location)],
            )
                .into_response()
        }),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("api-token"), "cli-test-token").unwrap();
    let config = dir.path().join("baton.yaml");
    std::fs::write(
        &config,
        format!(
            "dbt_cloud:\n  base_url: http://127.0.0.1:9\n  account_id: 1\n  token_env: BATON_TEST_UNSET\n\
             state_dir: state\nhttp:\n  listen: {standby}\n  token_file: api-token\n"
        ),
    )
    .unwrap();
    let client = ApiClient::from_args(&ControlArgs { config, json: true }).unwrap();
    let answer: serde_json::Value = client.get(&["pipelines"], &[]).await.unwrap();
    assert_eq!(answer["answered_by"], "leader");
}
