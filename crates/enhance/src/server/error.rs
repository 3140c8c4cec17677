//! API errors: a status, a machine-readable code and a public message; causes are logged.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

/// The JSON body of every error response: `{"error": code, "message": text}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Machine-readable code, e.g. `bad_image`.
    pub error: String,
    /// Human-readable explanation.
    pub message: String,
}

/// Everything `POST /v1/enhance` can answer besides 200.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// 400: the body is not a decodable image.
    #[error("{0}")]
    BadImage(String),
    /// 400: the Content-Type is not image/png or image/jpeg.
    #[error("{0}")]
    UnsupportedFormat(String),
    /// 400: a query parameter is missing its value, unknown or out of range.
    #[error("{0}")]
    BadParams(String),
    /// 400: the Idempotency-Key header breaks the contract.
    #[error("{0}")]
    BadIdempotencyKey(String),
    /// 400: the body could not be read.
    #[error("{0}")]
    BadBody(String),
    /// 401: the server has an access token and the request does not carry it.
    #[error("{0}")]
    Unauthorized(String),
    /// 408: the request (body upload included) took longer than the server allows.
    #[error("{0}")]
    Timeout(String),
    /// 413: body or image larger than the server accepts.
    #[error("{0}")]
    TooLarge(String),
    /// 429: over the rate limit; come back after this many seconds.
    #[error("too many requests; retry after {retry_after_secs} s")]
    RateLimited {
        /// Seconds to wait, sent as `Retry-After`.
        retry_after_secs: u64,
    },
    /// 503: transiently unavailable.
    #[error("{0}")]
    Unavailable(String),
    /// 500: a bug or an unexpected failure; the message is generic, the cause logged.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// HTTP status and machine-readable code.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadImage(_) => (StatusCode::BAD_REQUEST, "bad_image"),
            ApiError::UnsupportedFormat(_) => (StatusCode::BAD_REQUEST, "unsupported_format"),
            ApiError::BadParams(_) => (StatusCode::BAD_REQUEST, "bad_params"),
            ApiError::BadIdempotencyKey(_) => (StatusCode::BAD_REQUEST, "bad_idempotency_key"),
            ApiError::BadBody(_) => (StatusCode::BAD_REQUEST, "bad_body"),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Timeout(_) => (StatusCode::REQUEST_TIMEOUT, "timeout"),
            ApiError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            ApiError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        match &self {
            ApiError::Internal(cause) => tracing::error!(%cause, "enhance request failed"),
            ApiError::Unavailable(_) | ApiError::RateLimited { .. } => {
                tracing::debug!(status = status.as_u16(), error = %self, "enhance request refused")
            }
            _ => {
                tracing::debug!(status = status.as_u16(), error = %self, "enhance request rejected")
            }
        }
        let body = ErrorBody {
            error: code.to_string(),
            message: self.to_string(),
        };
        let mut response = (status, Json(body)).into_response();
        if let ApiError::RateLimited { retry_after_secs } = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
