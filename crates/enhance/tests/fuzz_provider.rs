//! Property tests of the HTTP provider's response handling: a scripted server answers
//! any status, Content-Type, Retry-After and body (random bytes, error JSON with huge
//! messages, images of the wrong size, decompression bombs, bodies far too large).
//!
//! The provider never panics or hangs, reads no more than a bounded body, never
//! accepts an image of another size, keeps the status it was given, honours at most
//! an hour of Retry-After, and its message names the URL and stays short.

mod common;

use std::time::Duration;

use common::craft::png_declaring;
use idempipe_enhance::provider::classify::{MAX_RETRY_AFTER, classify_status, parse_retry_after};
use idempipe_enhance::{
    EnhanceParams, HttpProvider, HttpProviderConfig, ImageFormat, Provider, codec,
};
use idempipe_testkit::scripted::{Answer, ScriptedServer};
use image::RgbImage;
use proptest::prelude::*;

fn frame() -> RgbImage {
    RgbImage::from_fn(12, 9, |x, y| {
        image::Rgb([(x * 20) as u8, (y * 25) as u8, 7])
    })
}

fn status() -> impl Strategy<Value = u16> {
    prop_oneof![
        3 => Just(200u16),
        1 => prop::sample::select(vec![400u16, 401, 404, 408, 413, 429, 500, 501, 502, 503]),
        1 => 200u16..=599,
    ]
}

fn content_type() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop::option::of(prop_oneof![
        prop::sample::select(vec![
            "image/png",
            "image/jpeg",
            "application/json",
            "text/html"
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        prop::collection::vec(any::<u8>(), 0..30),
    ])
}

fn retry_after() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop::option::of(prop_oneof![
        any::<u64>().prop_map(|n| n.to_string().into_bytes()),
        prop::sample::select(vec![
            "0",
            "-1",
            "1.5",
            "Wed, 21 Oct 2015 07:28:00 GMT",
            " 7 "
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        prop::collection::vec(any::<u8>(), 0..20),
    ])
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    let right = codec::encode(&frame(), ImageFormat::Png).unwrap();
    let wrong_size = codec::encode(&RgbImage::new(13, 9), ImageFormat::Png).unwrap();
    let jpeg = codec::encode(&frame(), ImageFormat::Jpeg).unwrap();
    prop_oneof![
        2 => prop::sample::select(vec![right, wrong_size, jpeg]),
        2 => prop::collection::vec(any::<u8>(), 0..400),
        1 => (1u32..=u32::MAX, 1u32..=u32::MAX).prop_map(|(w, h)| png_declaring(w, h)),
        1 => (any::<String>(), 0usize..200_000).prop_map(|(code, n)| {
            serde_json::json!({ "error": code, "message": "m\n".repeat(n) })
                .to_string()
                .into_bytes()
        }),
        1 => (0usize..4_000_000).prop_map(|n| vec![b'z'; n]),
    ]
}

fn answer() -> impl Strategy<Value = Answer> {
    (status(), content_type(), retry_after(), body()).prop_map(|(status, ct, ra, body)| {
        let mut headers = Vec::new();
        if let Some(ct) = ct {
            headers.push(("content-type".to_string(), ct));
        }
        if let Some(ra) = ra {
            headers.push(("retry-after".to_string(), ra));
        }
        Answer {
            status,
            headers,
            body,
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 160, ..ProptestConfig::default() })]

    #[test]
    fn any_answer_is_classified_without_harm(answer in answer()) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let status = answer.status;
        let result = rt.block_on(async {
            let server = ScriptedServer::start().await;
            server.set(answer);
            let config = HttpProviderConfig {
                timeout: Duration::from_secs(10),
                ..Default::default()
            };
            let provider = HttpProvider::new(&server.url, config).unwrap();
            let params = EnhanceParams::default();
            let call = provider.enhance(frame(), &params, "fuzz/1");
            tokio::time::timeout(Duration::from_secs(30), call)
                .await
                .expect("the provider hung")
        });
        match result {
            Ok(image) => {
                prop_assert_eq!(status, 200);
                prop_assert_eq!(image.dimensions(), frame().dimensions());
            }
            Err(e) => {
                prop_assert!(e.message().contains("/v1/enhance"), "{}", e.message());
                prop_assert!(e.message().len() < 2000, "message of {} bytes", e.message().len());
                prop_assert!(e.retry_after().is_none_or(|d| d <= MAX_RETRY_AFTER));
                if status == 200 {
                    prop_assert!(e.is_retryable(), "a garbled 200 is retryable: {}", e.message());
                } else {
                    prop_assert_eq!(e.status(), Some(status));
                }
            }
        }
    }

    #[test]
    fn classification_is_total_and_bounded(status in 0u16..1000, body in prop::collection::vec(any::<u8>(), 0..3000)) {
        let e = classify_status("http://h/v1/enhance", status, None, &body);
        prop_assert!(e.message().len() < 1200);
        prop_assert!(!e.message().contains('\n'));
        prop_assert_eq!(e.status(), Some(status));
    }

    #[test]
    fn retry_after_is_bounded(text in any::<String>()) {
        if let Some(d) = parse_retry_after(Some(&text)) {
            prop_assert!(d <= MAX_RETRY_AFTER);
        }
    }
}
