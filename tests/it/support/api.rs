//! The control API on port 0 in front of a test daemon (tests/daemon), and a small JSON client.

#![allow(dead_code, clippy::unwrap_used)]

use super::daemon::Harness;
use baton::secret::Secret;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub const TOKEN: &str = "api-test-token-5f1c9e";

pub struct Api {
    pub base: String,
    pub token: Option<String>,
    http: reqwest::Client,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Api {
    /// Serves the API for `h`'s current daemon, requiring `TOKEN`.
    pub async fn start(h: &Harness) -> Api {
        Self::start_with(h, Some(TOKEN)).await
    }

    pub async fn start_with(h: &Harness, token: Option<&str>) -> Api {
        Self::serve(h.daemon.clone(), h.client(), token).await
    }

    /// Serves the API for a daemon handle, with `client` (the daemon's own, to see its budget).
    pub async fn serve(
        handle: baton::runtime::DaemonHandle,
        client: baton::dbt_cloud::client::DbtCloudClient,
        token: Option<&str>,
    ) -> Api {
        let state = baton::http::AppState::new(handle, token.map(Secret::new), Some(client));
        Self::serve_state(state, token).await
    }

    /// Serves the API with `state` as built by the test (more accounts, say).
    pub async fn serve_state(state: baton::http::AppState, token: Option<&str>) -> Api {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(baton::http::serve(
            listener,
            baton::http::router(state),
            shutdown.clone(),
        ));
        Api {
            base,
            token: token.map(str::to_string),
            http: reqwest::Client::new(),
            shutdown,
            task,
        }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }

    async fn send(&self, request: reqwest::RequestBuilder, auth: bool) -> (u16, Value) {
        let request = match (&self.token, auth) {
            (Some(t), true) => request.bearer_auth(t),
            _ => request,
        };
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        if let Some(token) = &self.token {
            assert!(
                !text.contains(token.as_str()),
                "the token leaked into a response: {text}"
            );
        }
        let value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
        (status, value)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.send(self.http.get(format!("{}{path}", self.base)), true)
            .await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(
            self.http.post(format!("{}{path}", self.base)).json(&body),
            true,
        )
        .await
    }

    pub async fn get_without_token(&self, path: &str) -> (u16, Value) {
        self.send(self.http.get(format!("{}{path}", self.base)), false)
            .await
    }

    pub async fn post_without_token(&self, path: &str) -> (u16, Value) {
        self.send(
            self.http
                .post(format!("{}{path}", self.base))
                .json(&serde_json::json!({})),
            false,
        )
        .await
    }

    pub async fn post_with_token(&self, path: &str, token: &str) -> (u16, Value) {
        self.send(
            self.http
                .post(format!("{}{path}", self.base))
                .bearer_auth(token)
                .json(&serde_json::json!({})),
            false,
        )
        .await
    }
}

/// A pipeline run id as a URL path segment (`@`, `:` and `#` escaped).
pub fn seg(id: &str) -> String {
    url::form_urlencoded::byte_serialize(id.as_bytes()).collect()
}
