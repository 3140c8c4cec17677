//! `POST /v1/enhance`: checks, admission (rate limit, injected faults), the idempotency
//! cache, then decode, enhance and encode on the blocking pool.

use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use image::RgbImage;

use super::ServerState;
use super::cache::fingerprint;
use super::error::ApiError;
use super::faults::AnswerFault;
use crate::buffers::FRAMES;
use crate::codec::{self, CodecError, ImageFormat, PngCompression};
use crate::idempotency::validate_key;
use crate::params::EnhanceParams;

/// Header naming the unit of work.
const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Answers one enhancement request and counts its status.
pub(crate) async fn enhance(
    State(state): State<ServerState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let limit = state.inner.config.request_timeout;
    let processed = tokio::time::timeout(limit, process(&state, query.as_deref(), &headers, body))
        .await
        .unwrap_or_else(|_| {
            Err(ApiError::Timeout(format!(
                "the request was not completed within {} s (body upload included)",
                limit.as_secs_f64()
            )))
        });
    let response = match processed {
        Ok(response) => response,
        Err(err) => err.into_response(),
    };
    state.inner.stats.answered(response.status().as_u16());
    response
}

async fn process(
    state: &ServerState,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let config = &state.inner.config;
    refuse_declared_oversize(headers, config.max_body_bytes)?;
    let body = read_body(body, config.max_body_bytes).await?;
    let key = match headers.get(IDEMPOTENCY_KEY) {
        Some(value) => {
            validate_key(value.as_bytes())
                .map_err(|e| ApiError::BadIdempotencyKey(e.to_string()))?;
            // Visible ASCII, checked above.
            Some(String::from_utf8_lossy(value.as_bytes()).into_owned())
        }
        None => None,
    };
    let params = parse_params(query.unwrap_or(""))?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let format = ImageFormat::from_content_type(content_type).ok_or_else(|| {
        ApiError::UnsupportedFormat(format!(
            "Content-Type {:?} is not supported; send image/png or image/jpeg",
            excerpt(content_type)
        ))
    })?;

    admit(state)?;
    if let (Some(ledger), Some(key)) = (&state.inner.ledger, &key) {
        ledger.admitted(key);
    }
    if !config.latency.is_zero() {
        tokio::time::sleep(config.latency).await;
    }

    let output = match key.as_deref().and_then(|k| {
        state
            .inner
            .cache
            .slot(k, request_fingerprint(format, &params, &body))
            .map(|s| (k, s))
    }) {
        Some((key, (slot, id))) => {
            let mut ran = false;
            let output = slot
                .get_or_try_init(|| {
                    ran = true;
                    run_enhancement(state, body, format, params, Some(key))
                })
                .await?
                .clone();
            if ran {
                state.inner.cache.filled(key, id, output.len());
            } else {
                state.inner.stats.replayed();
                tracing::debug!(key, "answered from the idempotency cache");
            }
            output
        }
        None => run_enhancement(state, body, format, params, key.as_deref()).await?,
    };
    let fault = state.inner.faults.answer_fault();
    let ledger = state.inner.ledger.as_ref();
    if let Some(ledger) = ledger {
        ledger.injected(fault);
    }
    let output = match fault {
        AnswerFault::Garbage => Bytes::from_static(b"injected garbage: not an image"),
        AnswerFault::Hang | AnswerFault::None => {
            if fault == AnswerFault::Hang {
                tokio::time::sleep(config.hang).await;
            }
            if let (Some(ledger), Some(key)) = (ledger, &key) {
                ledger.answered_ok(key);
            }
            output
        }
    };
    let mut response = (StatusCode::OK, output).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    Ok(response)
}

/// Refuses at once a body whose declared length is over `limit`, before reading any of it.
fn refuse_declared_oversize(headers: &HeaderMap, limit: usize) -> Result<(), ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(len) if len > limit as u64 => Err(ApiError::TooLarge(format!(
            "request body of {len} bytes is larger than the limit of {limit} bytes"
        ))),
        _ => Ok(()),
    }
}

/// Reads the whole body, refusing more than `limit` bytes.
async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.downcast_ref::<LengthLimitError>().is_some() => Err(ApiError::TooLarge(
            format!("request body is larger than the limit of {limit} bytes"),
        )),
        Err(err) => Err(ApiError::BadBody(format!(
            "could not read the request body: {err}"
        ))),
    }
}

/// Rate limit, 429 bursts and injected 503s, in that order.
fn admit(state: &ServerState) -> Result<(), ApiError> {
    let inner = &state.inner;
    // Retry-After is whole seconds; round up so a client never comes back too early.
    let limited = |wait: Duration| ApiError::RateLimited {
        retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
    };
    if let Some(bucket) = &inner.limiter
        && let Err(wait) = bucket.try_acquire(Instant::now())
    {
        return Err(limited(wait));
    }
    if let Some(wait) = inner.faults.burst_429() {
        return Err(limited(wait));
    }
    if inner.faults.fail_now() {
        return Err(ApiError::Unavailable(
            "injected failure (server configured with a failure rate)".into(),
        ));
    }
    Ok(())
}

/// Decodes, enhances and re-encodes on the blocking pool.
async fn run_enhancement(
    state: &ServerState,
    body: Bytes,
    format: ImageFormat,
    params: EnhanceParams,
    key: Option<&str>,
) -> Result<Bytes, ApiError> {
    let inner = state.inner.clone();
    let key = key.map(str::to_string);
    let task = tokio::task::spawn_blocking(move || {
        // The decoded and enhanced frames live in reused buffers (see `buffers`).
        let frame =
            codec::decode_limited_into(&body, format, inner.config.max_pixels, FRAMES.take())
                .map_err(|e| match e {
                    CodecError::TooLarge { .. } | CodecError::OverLimits { .. } => {
                        ApiError::TooLarge(e.to_string())
                    }
                    other => ApiError::BadImage(other.to_string()),
                })?;
        inner.stats.enhanced();
        if let (Some(ledger), Some(key)) = (&inner.ledger, &key) {
            ledger.enhanced(key);
        }
        let (width, height) = frame.dimensions();
        let mut pixels = FRAMES.take();
        pixels.resize(frame.as_raw().len(), 0);
        let mut enhanced = RgbImage::from_raw(width, height, pixels).expect("sized above");
        crate::algorithm::enhance_into(&frame, &params, &mut enhanced);
        FRAMES.give(frame.into_raw());
        // Answer as the client sent: stored PNG to a client that did not compress.
        let png = PngCompression::mirroring(body.len(), width, height);
        let bytes = codec::encode_with(&enhanced, format, png);
        FRAMES.give(enhanced.into_raw());
        Ok(Bytes::from(
            bytes.map_err(|e| ApiError::Internal(e.to_string()))?,
        ))
    });
    task.await
        .map_err(|e| ApiError::Internal(format!("enhancement task failed: {e}")))?
}

/// Longest excerpt of a client's text quoted back in an error message.
const ECHO_CHARS: usize = 64;

/// Parses `sharpness`, `contrast` and `brightness`, each at most once; anything else is
/// refused so a misspelt or repeated parameter does not silently change the result.
fn parse_params(query: &str) -> Result<EnhanceParams, ApiError> {
    let mut params = EnhanceParams::default();
    let mut seen = [false; 3];
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let (index, slot) = match name {
            "sharpness" => (0, &mut params.sharpness),
            "contrast" => (1, &mut params.contrast),
            "brightness" => (2, &mut params.brightness),
            other => {
                return Err(ApiError::BadParams(format!(
                    "unknown query parameter {:?}; accepted: sharpness, contrast, brightness",
                    excerpt(other)
                )));
            }
        };
        if std::mem::replace(&mut seen[index], true) {
            return Err(ApiError::BadParams(format!(
                "{name} is given more than once"
            )));
        }
        *slot = value.parse().map_err(|_| {
            ApiError::BadParams(format!("{name} must be a number, got {:?}", excerpt(value)))
        })?;
    }
    params
        .validate()
        .map_err(|e| ApiError::BadParams(e.to_string()))?;
    Ok(params)
}

/// The first [`ECHO_CHARS`] characters of `text`, marked when cut.
fn excerpt(text: &str) -> String {
    match text.char_indices().nth(ECHO_CHARS) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_string(),
    }
}

fn request_fingerprint(format: ImageFormat, params: &EnhanceParams, body: &[u8]) -> u64 {
    let mut p = [0u8; 12];
    for (i, (_, v)) in params.fields().iter().enumerate() {
        p[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
    }
    fingerprint(&[format.content_type().as_bytes(), &p, body])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_parse_and_validate() {
        assert_eq!(parse_params("").unwrap(), EnhanceParams::default());
        let p = parse_params("sharpness=2&contrast=0.5").unwrap();
        assert_eq!((p.sharpness, p.contrast, p.brightness), (2.0, 0.5, 1.0));
        assert!(parse_params("sharpness=abc").is_err());
        assert!(parse_params("sharpness=9").is_err());
        assert!(parse_params("sharpnes=1").is_err());
        assert!(parse_params("contrast=NaN").is_err());
        let twice = parse_params("contrast=1&contrast=2")
            .unwrap_err()
            .to_string();
        assert!(
            twice.contains("contrast is given more than once"),
            "{twice}"
        );
        let long = parse_params(&format!("x{}=1", "y".repeat(10_000)))
            .unwrap_err()
            .to_string();
        assert!(long.len() < 200, "{long}");
    }
}
