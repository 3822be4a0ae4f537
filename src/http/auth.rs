//! Bearer-token authentication of `/api/v1` and the rule that a listener off loopback needs a token.

use super::error::HttpError;
use super::AppState;
use crate::secret::Secret;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use std::net::SocketAddr;
use subtle::ConstantTimeEq;

/// Refuses a listener reachable from other hosts when no token protects it.
pub fn check_listen(addr: SocketAddr, token: Option<&Secret>) -> Result<(), String> {
    if addr.ip().is_loopback() || token.is_some() {
        return Ok(());
    }
    Err(format!(
        "refusing to serve the control API on {addr} without a token: anyone who can reach it could \
         trigger and cancel runs. Set `http.token_env` or `http.token_file` in the config, or listen \
         on a loopback address (127.0.0.1)"
    ))
}

/// Every request must carry the configured token (when one is configured).
pub async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, HttpError> {
    if let Some(expected) = &state.token {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .unwrap_or("");
        let ok: bool = given.as_bytes().ct_eq(expected.expose().as_bytes()).into();
        if !ok {
            // Nested under /api/v1, the request sees its path without the prefix.
            let path = format!("/api/v1{}", request.uri().path());
            tracing::warn!(%path, "control API request refused: missing or wrong token");
            return Err(HttpError::unauthorized());
        }
    }
    Ok(next.run(request).await)
}
