//! Providers: the HTTP provider against the real server and against a hand-rolled
//! misbehaving one, and how each outcome is classified.

mod common;

use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use common::{encoded, small_frame, start_server};
use idempipe_enhance::provider::ProviderConfigError;
use idempipe_enhance::server::Burst429;
use idempipe_enhance::{
    EnhanceParams, HttpProvider, HttpProviderConfig, ImageFormat, LocalProvider, Provider,
    ProviderError, ServerConfig,
};

fn http(base: &str) -> HttpProvider {
    HttpProvider::new(base, HttpProviderConfig::default()).unwrap()
}

async fn call(provider: &dyn Provider) -> Result<image::RgbImage, ProviderError> {
    provider
        .enhance(small_frame(), &EnhanceParams::default(), "frame/000001")
        .await
}

#[tokio::test]
async fn http_png_matches_local_exactly() {
    let server = start_server(ServerConfig::default()).await;
    let remote = call(&http(&server.base)).await.unwrap();
    let local = call(&LocalProvider::new()).await.unwrap();
    assert_eq!(remote, local);
    assert_eq!(server.stats.enhance_calls(), 1);
}

#[tokio::test]
async fn http_jpeg_keeps_size() {
    let server = start_server(ServerConfig::default()).await;
    let config = HttpProviderConfig {
        format: ImageFormat::Jpeg,
        ..Default::default()
    };
    let provider = HttpProvider::new(&server.base, config).unwrap();
    assert_eq!(
        call(&provider).await.unwrap().dimensions(),
        small_frame().dimensions()
    );
}

#[tokio::test]
async fn retried_key_is_charged_once() {
    let server = start_server(ServerConfig::default()).await;
    let provider = http(&server.base);
    let a = call(&provider).await.unwrap();
    let b = call(&provider).await.unwrap();
    assert_eq!(a, b);
    assert_eq!(server.stats.enhance_calls(), 1);
}

#[tokio::test]
async fn server_statuses_are_classified() {
    let burst = Burst429 {
        every: 1,
        length: 1,
        retry_after: Duration::from_secs(3),
    };
    let server = start_server(ServerConfig {
        burst_429: Some(burst),
        ..Default::default()
    })
    .await;
    let err = call(&http(&server.base)).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert_eq!(
        (err.status(), err.retry_after()),
        (Some(429), Some(Duration::from_secs(3)))
    );

    let server = start_server(ServerConfig {
        failure_rate: 1.0,
        ..Default::default()
    })
    .await;
    let err = call(&http(&server.base)).await.unwrap_err();
    assert!(err.is_retryable() && err.status() == Some(503), "{err}");

    let server = start_server(ServerConfig {
        max_pixels: 64,
        ..Default::default()
    })
    .await;
    let err = call(&http(&server.base)).await.unwrap_err();
    assert!(!err.is_retryable() && err.status() == Some(413), "{err}");
    assert!(err.message().contains("more than the limit"), "{err}");
}

#[tokio::test]
async fn invalid_input_is_permanent_without_a_call() {
    let server = start_server(ServerConfig::default()).await;
    let provider = http(&server.base);
    let bad = EnhanceParams {
        sharpness: f32::INFINITY,
        ..Default::default()
    };
    let err = provider
        .enhance(small_frame(), &bad, "k")
        .await
        .unwrap_err();
    assert!(
        !err.is_retryable() && err.message().contains("sharpness"),
        "{err}"
    );
    let err = provider
        .enhance(small_frame(), &EnhanceParams::default(), "bad key")
        .await
        .unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    let err = LocalProvider::new()
        .enhance(small_frame(), &bad, "k")
        .await
        .unwrap_err();
    assert!(!err.is_retryable());
    assert_eq!(server.stats.snapshot().requests, 0);
}

#[tokio::test]
async fn connection_refused_is_retryable_and_names_the_url() {
    // Bind then drop to get a port nobody listens on.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let base = format!("http://{addr}");
    let err = call(&http(&base)).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(
        err.message().contains(&base) && err.message().contains("connect"),
        "{err}"
    );
}

#[test]
fn malformed_base_url_is_a_clear_error() {
    let err = HttpProvider::new("localhost:8080", HttpProviderConfig::default()).unwrap_err();
    assert!(matches!(err, ProviderConfigError::BadUrl { .. }));
    assert!(err.to_string().contains("localhost:8080"), "{err}");
}

/// A server that breaks the contract in several ways, one per base path.
async fn misbehaving_server() -> String {
    let wrong_size = encoded(&image::RgbImage::new(8, 8), ImageFormat::Png);
    let app = Router::new()
        .route(
            "/garbage/v1/enhance",
            post(|| async {
                (
                    [(header::CONTENT_TYPE, "image/png")],
                    "<html>proxy error</html>",
                )
            }),
        )
        .route(
            "/wrongsize/v1/enhance",
            post(move || async move { ([(header::CONTENT_TYPE, "image/png")], wrong_size) }),
        )
        .route(
            "/busy/v1/enhance",
            post(|| async {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(header::RETRY_AFTER, "7")],
                    "busy",
                )
                    .into_response()
            }),
        )
        .route(
            "/teapot/v1/enhance",
            post(|| async { (StatusCode::IM_A_TEAPOT, "short and stout") }),
        )
        .route(
            "/slow/v1/enhance",
            post(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

#[tokio::test]
async fn contract_breaking_answers_are_clear_errors() {
    let base = misbehaving_server().await;

    let err = call(&http(&format!("{base}/garbage"))).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(
        err.message().contains("/garbage/v1/enhance") && err.message().contains("not an image"),
        "{err}"
    );

    let err = call(&http(&format!("{base}/wrongsize"))).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(
        err.message().contains("8x8 image for a 176x144 frame"),
        "{err}"
    );

    let err = call(&http(&format!("{base}/busy"))).await.unwrap_err();
    assert_eq!(
        (err.is_retryable(), err.retry_after()),
        (true, Some(Duration::from_secs(7)))
    );

    let err = call(&http(&format!("{base}/teapot"))).await.unwrap_err();
    assert!(
        !err.is_retryable() && err.message().contains("short and stout"),
        "{err}"
    );

    let config = HttpProviderConfig {
        timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let slow = HttpProvider::new(&format!("{base}/slow"), config).unwrap();
    let err = call(&slow).await.unwrap_err();
    assert!(
        err.is_retryable() && err.message().contains("timed out"),
        "{err}"
    );
}
