//! The per-request time limit: a request whose response head is not ready in time is
//! answered `503` (the body of a live stream or a video download is not limited).

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::state::AppState;

/// Middleware: runs the request within [`AppState::request_timeout`].
pub(crate) async fn limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let limit = state.request_timeout();
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(?limit, "request timed out");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                format!(
                    "the dashboard could not answer within {} s; try again",
                    limit.as_secs_f64()
                ),
            )
            .into_response()
        }
    }
}
