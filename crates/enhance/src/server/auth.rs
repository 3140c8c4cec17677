//! The access token: with one configured, every route but `GET /healthz` needs
//! `Authorization: Bearer TOKEN`, whoever asks (loopback included).

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ServerState;
use super::error::ApiError;

/// The route left open, so load balancers and the pipeline's preflight can check the
/// server is up without the token.
const OPEN_PATH: &str = "/healthz";

/// Middleware: refuses a request without the configured token (401, counted as an
/// answered request when it was meant for `/v1/enhance`).
pub(crate) async fn require_token(
    State(state): State<ServerState>,
    request: Request,
    next: Next,
) -> Response {
    let Some(token) = state.inner.config.token.as_deref() else {
        return next.run(request).await;
    };
    if request.uri().path() == OPEN_PATH {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if presented.is_some_and(|p| same(p.as_bytes(), token.as_bytes())) {
        return next.run(request).await;
    }
    let why = if presented.is_some() {
        "wrong access token"
    } else {
        "this server needs its access token: send `Authorization: Bearer TOKEN`"
    };
    let response = ApiError::Unauthorized(why.into()).into_response();
    if request.uri().path() == super::ENHANCE_PATH {
        state.inner.stats.answered(response.status().as_u16());
    }
    response
}

/// Compares in time independent of where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
