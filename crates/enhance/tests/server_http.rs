//! The server over real HTTP on loopback: every status of the contract.

mod common;

use std::time::Duration;

use common::{encoded, small_frame, start_server};
use idempipe_enhance::server::{Burst429, ErrorBody, StatsSnapshot};
use idempipe_enhance::{EnhanceParams, ImageFormat, ServerConfig, codec, enhance};
use reqwest::{Client, Response, StatusCode};

/// A client (reqwest is built without a default TLS provider; the crate installs ring).
fn client() -> Client {
    idempipe_enhance::provider::tls::install_crypto_provider();
    Client::new()
}

async fn post(
    base: &str,
    query: &str,
    content_type: &str,
    key: Option<&str>,
    body: Vec<u8>,
) -> Response {
    let mut req = client()
        .post(format!("{base}/v1/enhance?{query}"))
        .header("content-type", content_type)
        .body(body);
    if let Some(key) = key {
        req = req.header("idempotency-key", key);
    }
    req.send().await.unwrap()
}

async fn error_of(resp: Response) -> (StatusCode, ErrorBody) {
    let status = resp.status();
    assert_eq!(resp.headers()["content-type"], "application/json");
    (status, resp.json().await.unwrap())
}

#[tokio::test]
async fn png_200_is_the_algorithm_exactly() {
    let server = start_server(ServerConfig::default()).await;
    let frame = small_frame();
    let resp = post(
        &server.base,
        "sharpness=1.5",
        "image/png",
        None,
        encoded(&frame, ImageFormat::Png),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "image/png");
    let out = codec::decode(&resp.bytes().await.unwrap(), ImageFormat::Png).unwrap();
    let params = EnhanceParams {
        sharpness: 1.5,
        ..Default::default()
    };
    assert_eq!(out, enhance(&frame, &params));
    assert_eq!(server.stats.snapshot().status(200), 1);
}

#[tokio::test]
async fn jpeg_200_same_format_and_size() {
    let server = start_server(ServerConfig::default()).await;
    let frame = small_frame();
    let resp = post(
        &server.base,
        "",
        "image/jpeg",
        None,
        encoded(&frame, ImageFormat::Jpeg),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "image/jpeg");
    let out = codec::decode(&resp.bytes().await.unwrap(), ImageFormat::Jpeg).unwrap();
    assert_eq!(out.dimensions(), frame.dimensions());
}

#[tokio::test]
async fn bad_requests_are_400_with_codes() {
    let server = start_server(ServerConfig::default()).await;
    let png = encoded(&small_frame(), ImageFormat::Png);
    let cases = [
        (
            "",
            "image/png",
            None,
            b"definitely not a png".to_vec(),
            "bad_image",
        ),
        ("", "image/jpeg", None, png.clone(), "bad_image"),
        ("", "image/gif", None, png.clone(), "unsupported_format"),
        ("sharpness=9", "image/png", None, png.clone(), "bad_params"),
        ("contrast=abc", "image/png", None, png.clone(), "bad_params"),
        ("sharpnes=1", "image/png", None, png.clone(), "bad_params"),
        (
            "",
            "image/png",
            Some("has space"),
            png.clone(),
            "bad_idempotency_key",
        ),
        (
            "",
            "image/png",
            Some(&*"k".repeat(256)),
            png.clone(),
            "bad_idempotency_key",
        ),
    ];
    for (query, ct, key, body, code) in cases {
        let (status, err) = error_of(post(&server.base, query, ct, key, body).await).await;
        assert_eq!(
            (status.as_u16(), err.error.as_str()),
            (400, code),
            "{query} {ct} {key:?}: {}",
            err.message
        );
        assert!(!err.message.is_empty());
    }
    let stats = server.stats.snapshot();
    assert_eq!((stats.status(400), stats.enhance_calls), (8, 0));
}

#[tokio::test]
async fn too_large_is_413_for_bytes_and_pixels() {
    let png = encoded(&small_frame(), ImageFormat::Png);
    let server = start_server(ServerConfig {
        max_body_bytes: 1000,
        ..Default::default()
    })
    .await;
    let (status, err) =
        error_of(post(&server.base, "", "image/png", None, png.clone()).await).await;
    assert_eq!((status.as_u16(), err.error.as_str()), (413, "too_large"));
    let server = start_server(ServerConfig {
        max_pixels: 100 * 100,
        ..Default::default()
    })
    .await;
    let (status, err) = error_of(post(&server.base, "", "image/png", None, png).await).await;
    assert_eq!((status.as_u16(), err.error.as_str()), (413, "too_large"));
    assert!(err.message.contains("176x144"), "{}", err.message);
}

#[tokio::test]
async fn rate_limit_is_429_with_retry_after() {
    let server = start_server(ServerConfig {
        rate_limit: 0.5,
        rate_burst: 1,
        ..Default::default()
    })
    .await;
    let png = encoded(&small_frame(), ImageFormat::Png);
    assert_eq!(
        post(&server.base, "", "image/png", None, png.clone())
            .await
            .status(),
        200
    );
    let resp = post(&server.base, "", "image/png", None, png).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "2");
    let (_, err) = error_of(resp).await;
    assert_eq!(err.error, "rate_limited");
}

#[tokio::test]
async fn burst_429_pattern() {
    let burst = Burst429 {
        every: 3,
        length: 1,
        retry_after: Duration::from_secs(5),
    };
    let server = start_server(ServerConfig {
        burst_429: Some(burst),
        ..Default::default()
    })
    .await;
    let png = encoded(&small_frame(), ImageFormat::Png);
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let resp = post(&server.base, "", "image/png", None, png.clone()).await;
        if resp.status() == 429 {
            assert_eq!(resp.headers()["retry-after"], "5");
        }
        statuses.push(resp.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 429, 200, 200, 429]);
}

#[tokio::test]
async fn injected_failure_is_503() {
    let server = start_server(ServerConfig {
        failure_rate: 1.0,
        ..Default::default()
    })
    .await;
    let png = encoded(&small_frame(), ImageFormat::Png);
    let (status, err) = error_of(post(&server.base, "", "image/png", None, png).await).await;
    assert_eq!((status.as_u16(), err.error.as_str()), (503, "unavailable"));
    assert_eq!(server.stats.enhance_calls(), 0);
}

#[tokio::test]
async fn healthz_and_stats() {
    let server = start_server(ServerConfig::default()).await;
    let resp = client()
        .get(format!("{}/healthz", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "ok");
    let png = encoded(&small_frame(), ImageFormat::Png);
    post(&server.base, "", "image/png", None, png).await;
    post(&server.base, "", "image/png", None, b"junk".to_vec()).await;
    let stats: StatsSnapshot = client()
        .get(format!("{}/stats", server.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (
            stats.enhance_calls,
            stats.requests,
            stats.status(200),
            stats.status(400)
        ),
        (1, 2, 1, 1)
    );
}

#[tokio::test]
async fn repeated_idempotency_key_is_not_enhanced_again() {
    let server = start_server(ServerConfig::default()).await;
    let frame = small_frame();
    let png = encoded(&frame, ImageFormat::Png);
    let first = post(
        &server.base,
        "",
        "image/png",
        Some("frame/000001"),
        png.clone(),
    )
    .await;
    let second = post(
        &server.base,
        "",
        "image/png",
        Some("frame/000001"),
        png.clone(),
    )
    .await;
    assert_eq!(
        (first.status(), second.status()),
        (StatusCode::OK, StatusCode::OK)
    );
    assert_eq!(first.bytes().await.unwrap(), second.bytes().await.unwrap());
    let stats = server.stats.snapshot();
    assert_eq!((stats.enhance_calls, stats.idempotent_replays), (1, 1));

    // Another key, or the same key with other parameters, is new work.
    post(
        &server.base,
        "",
        "image/png",
        Some("frame/000002"),
        png.clone(),
    )
    .await;
    post(
        &server.base,
        "contrast=2",
        "image/png",
        Some("frame/000001"),
        png,
    )
    .await;
    assert_eq!(server.stats.enhance_calls(), 3);
}

#[tokio::test]
async fn concurrent_duplicates_share_one_enhancement() {
    let config = ServerConfig {
        latency: Duration::from_millis(50),
        ..Default::default()
    };
    let server = start_server(config).await;
    let png = encoded(&small_frame(), ImageFormat::Png);
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (base, png) = (server.base.clone(), png.clone());
            tokio::spawn(async move { post(&base, "", "image/png", Some("same-key"), png).await })
        })
        .collect();
    let mut bodies = Vec::new();
    for handle in handles {
        let resp = handle.await.unwrap();
        assert_eq!(resp.status(), 200);
        bodies.push(resp.bytes().await.unwrap());
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]));
    let stats = server.stats.snapshot();
    assert_eq!((stats.enhance_calls, stats.idempotent_replays), (1, 3));
}
