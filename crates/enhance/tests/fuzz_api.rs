//! Property tests of everything the enhancement server reads from a client: the query
//! string, the Content-Type, the Idempotency-Key and the body (random bytes, damaged
//! images, images declaring huge sizes). Through the router, without a socket.
//!
//! Whatever arrives, the answer is 200 with an image of the frame's size, or 400/413
//! with the contract's JSON error naming the problem; never a 500, a panic or a hang.

mod common;

use std::time::Duration;

use axum::body::{Body, to_bytes};
use axum::http::{HeaderValue, Request};
use common::craft::{jpeg_declaring, png_declaring};
use idempipe_enhance::server::{ErrorBody, ServerState};
use idempipe_enhance::{EnhanceParams, ImageFormat, ServerConfig, codec, router};
use image::RgbImage;
use proptest::prelude::*;
use tower::ServiceExt;

/// A small frame, so each case enhances in well under a millisecond.
fn frame() -> RgbImage {
    RgbImage::from_fn(12, 9, |x, y| {
        image::Rgb([(x * 20) as u8, (y * 25) as u8, ((x + y) * 9) as u8])
    })
}

/// Pixel limit of the server under test: room for the frame, not for the bombs.
const MAX_PIXELS: u64 = 64 * 64;

/// Characters a client may put in a query string, plus the troublesome ones
/// (escapes, separators, signs, exponents, non-ASCII through escapes).
const QUERY_CHARS: &[char] = &[
    'a', 'c', 'e', 'n', 's', 'x', 'E', 'N', 'I', 'f', '0', '1', '4', '9', '.', '-', '+', '=', '&',
    '%', '2', 'F', ';', '_', '~',
];

fn query() -> impl Strategy<Value = String> {
    let name = prop::sample::select(vec![
        "sharpness",
        "contrast",
        "brightness",
        "sharpnes",
        "",
        "SHARPNESS",
    ]);
    let value = prop_oneof![
        any::<f32>().prop_map(|v| v.to_string()),
        (0.0f32..=4.0).prop_map(|v| v.to_string()),
        prop::sample::select(vec![
            "",
            "NaN",
            "inf",
            "-0",
            "1e3",
            "4.0000001",
            "0x1",
            " 1"
        ])
        .prop_map(str::to_string),
    ];
    let structured = prop::collection::vec((name, value), 0..5).prop_map(|pairs| {
        pairs
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("&")
    });
    let raw = prop::collection::vec(prop::sample::select(QUERY_CHARS), 0..80)
        .prop_map(|chars| chars.into_iter().collect());
    prop_oneof![structured, raw]
}

fn content_type() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::sample::select(vec![
            "image/png",
            "image/jpeg",
            "IMAGE/PNG; q=1",
            "image/jpg",
            "image/gif",
            "",
            ";",
            "image/png\t",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        prop::collection::vec(any::<u8>(), 0..40),
    ]
}

fn idempotency_key() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop::option::of(prop_oneof![
        prop::collection::vec(0x21u8..=0x7e, 1..300),
        prop::collection::vec(any::<u8>(), 0..40),
    ])
}

/// Bodies: the real frame in either format, the frame with bytes overwritten, cut
/// short, random bytes, and images whose header declares a huge size.
fn body() -> impl Strategy<Value = Vec<u8>> {
    let png = codec::encode(&frame(), ImageFormat::Png).unwrap();
    let jpeg = codec::encode(&frame(), ImageFormat::Jpeg).unwrap();
    let valid = prop::sample::select(vec![png, jpeg]);
    let damaged = (
        valid.clone(),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    )
        .prop_map(|(mut bytes, edits)| {
            for (at, value) in edits {
                let i = at.index(bytes.len());
                bytes[i] = value;
            }
            bytes
        });
    let cut = (valid.clone(), any::<prop::sample::Index>())
        .prop_map(|(bytes, at)| bytes[..at.index(bytes.len())].to_vec());
    let bombs = prop_oneof![
        (1u32..=u32::MAX, 1u32..=u32::MAX).prop_map(|(w, h)| png_declaring(w, h)),
        (1u16..=u16::MAX, 1u16..=u16::MAX).prop_map(|(w, h)| jpeg_declaring(w, h)),
    ];
    prop_oneof![
        2 => valid,
        3 => damaged,
        2 => cut,
        2 => prop::collection::vec(any::<u8>(), 0..600),
        2 => bombs,
    ]
}

/// What the contract allows as the answer to `sent`.
fn check_answer(
    sent: &[u8],
    status: u16,
    content_type: &str,
    body: &[u8],
) -> Result<(), TestCaseError> {
    if status == 200 {
        let format = ImageFormat::from_content_type(content_type);
        prop_assert!(format.is_some(), "200 with Content-Type {content_type:?}");
        let format = format.unwrap();
        let image = codec::decode(body, format);
        prop_assert!(image.is_ok(), "200 with an undecodable body");
        let input = codec::decode(sent, format);
        prop_assert!(input.is_ok(), "200 for an input that does not decode");
        prop_assert_eq!(image.unwrap().dimensions(), input.unwrap().dimensions());
        return Ok(());
    }
    prop_assert!(matches!(status, 400 | 413), "status {status}");
    prop_assert_eq!(content_type, "application/json");
    let error: ErrorBody = serde_json::from_slice(body)
        .map_err(|e| TestCaseError::fail(format!("error body is not the contract's JSON: {e}")))?;
    prop_assert!(
        matches!(
            error.error.as_str(),
            "bad_image"
                | "unsupported_format"
                | "bad_params"
                | "bad_idempotency_key"
                | "bad_body"
                | "too_large"
        ),
        "code {}",
        error.error
    );
    prop_assert!(!error.message.is_empty() && error.message.len() < 600);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn any_request_gets_a_contract_answer(
        query in query(),
        content_type in content_type(),
        key in idempotency_key(),
        body in body(),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let state = ServerState::new(ServerConfig {
            max_pixels: MAX_PIXELS,
            ..Default::default()
        })
        .unwrap();
        let Ok(uri) = format!("/v1/enhance?{query}").parse::<axum::http::Uri>() else {
            return Ok(());
        };
        let mut request = Request::post(uri).body(Body::from(body.clone())).unwrap();
        if let Ok(value) = HeaderValue::from_bytes(&content_type) {
            request.headers_mut().insert("content-type", value);
        }
        if let Some(value) = key.and_then(|k| HeaderValue::from_bytes(&k).ok()) {
            request.headers_mut().insert("idempotency-key", value);
        }
        let (status, content_type, answer) = rt.block_on(async {
            let answer = router(state.clone()).oneshot(request);
            let response = tokio::time::timeout(Duration::from_secs(20), answer)
                .await
                .expect("the server hung")
                .unwrap();
            let content_type = response.headers().get("content-type")
                .and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
            let status = response.status().as_u16();
            (status, content_type, to_bytes(response.into_body(), usize::MAX).await.unwrap())
        });
        check_answer(&body, status, &content_type, &answer)?;
        prop_assert_eq!(state.stats().snapshot().requests, 1);
    }

    #[test]
    fn decoding_never_panics_and_respects_the_pixel_limit(body in body(), png in any::<bool>()) {
        let format = if png { ImageFormat::Png } else { ImageFormat::Jpeg };
        if let Ok(image) = codec::decode_limited(&body, format, MAX_PIXELS) {
            prop_assert!(u64::from(image.width()) * u64::from(image.height()) <= MAX_PIXELS);
        }
    }

    #[test]
    fn params_validate_exactly_the_documented_range(
        sharpness in any::<f32>(), contrast in any::<f32>(), brightness in any::<f32>(),
    ) {
        let params = EnhanceParams { sharpness, contrast, brightness };
        let ok = params.fields().iter().all(|(_, v)| (0.0..=4.0).contains(v));
        match params.validate() {
            Ok(()) => prop_assert!(ok),
            Err(e) => {
                prop_assert!(!ok);
                prop_assert!(e.to_string().starts_with(e.name));
            }
        }
        prop_assert!(params.clamped().validate().is_ok());
    }
}
