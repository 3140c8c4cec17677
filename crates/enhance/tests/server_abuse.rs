//! The enhancement server under abuse, over real TCP: the access token from another
//! machine's address, bodies that lie about or exceed their size or never finish,
//! decompression bombs, malformed bodies and a crowd of connections. Each gets its
//! status, and a well-behaved request right after is served.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::craft::{jpeg_declaring, png_declaring};
use common::{TestServer, encoded, small_frame, start_server, start_server_at};
use idempipe_enhance::server::{ErrorBody, ServeLimits};
use idempipe_enhance::{ImageFormat, ServerConfig};
use idempipe_testkit::raw_http::{PATIENCE, connect_from, exchange, non_loopback_ip};
use tokio::io::AsyncWriteExt;

const TOKEN: &str = "abuse-test-token-0123456789";

fn client() -> reqwest::Client {
    idempipe_enhance::provider::tls::install_crypto_provider();
    reqwest::Client::new()
}

/// A well-behaved enhancement request: 200.
async fn assert_still_serving(addr: SocketAddr, token: Option<&str>) {
    let mut request = client()
        .post(format!("http://{addr}/v1/enhance"))
        .header("content-type", "image/png")
        .body(encoded(&small_frame(), ImageFormat::Png));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    assert_eq!(request.send().await.unwrap().status(), 200);
}

/// The JSON error of a raw response's text.
fn error_of(text: &str) -> ErrorBody {
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not an error body ({e}): {text}"))
}

#[tokio::test]
async fn the_token_is_required_from_another_address() {
    let server = start_server_at(
        "0.0.0.0:0",
        ServerConfig {
            token: Some(TOKEN.into()),
            ..Default::default()
        },
    )
    .await;
    let remote = SocketAddr::new(non_loopback_ip(), server.addr.port());
    let png = encoded(&small_frame(), ImageFormat::Png);
    let post = |auth: Option<&'static str>| {
        let mut request = client()
            .post(format!("http://{remote}/v1/enhance"))
            .header("content-type", "image/png")
            .body(png.clone());
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        request.send()
    };
    for (auth, message) in [
        (None, "needs its access token"),
        (Some("Bearer wrong-token-wrong-token"), "wrong access token"),
        (Some("Basic YWJ1c2U6dGVzdA=="), "needs its access token"),
        (Some("Bearer  "), "needs its access token"),
    ] {
        let response = post(auth).await.unwrap();
        assert_eq!(response.status(), 401, "{auth:?}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        let body: ErrorBody = response.json().await.unwrap();
        assert_eq!(body.error, "unauthorized");
        assert!(body.message.contains(message), "{auth:?}: {}", body.message);
    }
    let stats = client()
        .get(format!("http://{remote}/stats"))
        .send()
        .await
        .unwrap();
    assert_eq!(stats.status(), 401);
    // The health check stays open; the right token works from anywhere.
    let health = client()
        .get(format!("http://{remote}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let ok = post(Some("Bearer abuse-test-token-0123456789"))
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let stats = server.stats.snapshot();
    assert_eq!((stats.status(401), stats.enhance_calls), (4, 1));
}

#[tokio::test]
async fn a_declared_oversized_body_is_refused_before_it_is_sent() {
    let server = start_server(ServerConfig {
        max_body_bytes: 1 << 20,
        ..Default::default()
    })
    .await;
    let mut stream = connect_from("127.0.0.1", server.addr).await;
    // Declares 1 GiB, sends 10 bytes and waits: the answer must not wait for the rest.
    let started = Instant::now();
    let (status, text) = exchange(
        &mut stream,
        b"POST /v1/enhance HTTP/1.1\r\nhost: x\r\ncontent-type: image/png\r\n\
          content-length: 1073741824\r\n\r\n0123456789",
    )
    .await;
    assert_eq!(status, 413, "{text}");
    assert!(started.elapsed() < PATIENCE);
    let error = error_of(&text);
    assert!(error.message.contains("1073741824"), "{}", error.message);
    assert_still_serving(server.addr, None).await;
}

#[tokio::test]
async fn an_endless_chunked_body_stops_at_the_limit() {
    let server = start_server(ServerConfig {
        max_body_bytes: 1 << 20,
        ..Default::default()
    })
    .await;
    let mut stream = connect_from("127.0.0.1", server.addr).await;
    stream
        .write_all(
            b"POST /v1/enhance HTTP/1.1\r\nhost: x\r\ncontent-type: image/png\r\n\
              transfer-encoding: chunked\r\n\r\n",
        )
        .await
        .unwrap();
    let chunk = format!("10000\r\n{}\r\n", "z".repeat(0x10000));
    // Up to 4 MiB; the server answers once it has seen more than 1 MiB.
    let mut sent = 0;
    while sent < 64 && stream.write_all(chunk.as_bytes()).await.is_ok() {
        sent += 1;
    }
    let text = idempipe_testkit::raw_http::read_response(&mut stream).await;
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(error_of(&text).message.contains("1048576"), "{text}");
    assert_still_serving(server.addr, None).await;
}

#[tokio::test]
async fn a_stalled_upload_gets_408_and_others_are_served_meanwhile() {
    let server = start_server(ServerConfig {
        request_timeout: Duration::from_millis(800),
        ..Default::default()
    })
    .await;
    let mut stalled = Vec::new();
    for _ in 0..20 {
        let mut stream = connect_from("127.0.0.2", server.addr).await;
        stream
            .write_all(
                b"POST /v1/enhance HTTP/1.1\r\nhost: x\r\ncontent-type: image/png\r\n\
                  content-length: 5000\r\n\r\n\x89PNG",
            )
            .await
            .unwrap();
        stalled.push(stream);
    }
    assert_still_serving(server.addr, None).await;
    for mut stream in stalled {
        let text = idempipe_testkit::raw_http::read_response(&mut stream).await;
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
        assert_eq!(error_of(&text).error, "timeout");
    }
    assert_eq!(server.stats.snapshot().status(408), 20);
}

#[tokio::test]
async fn decompression_bombs_are_refused_from_their_header() {
    let server = start_server(ServerConfig::default()).await;
    let cases = [
        (
            "image/png",
            png_declaring(100_000, 100_000),
            413,
            "100000x100000",
        ),
        (
            "image/png",
            png_declaring(u32::MAX >> 1, 2),
            413,
            "too large to decode",
        ),
        (
            "image/jpeg",
            jpeg_declaring(65_000, 65_000),
            413,
            "65000x65000",
        ),
        // Within the pixel limit but with the data of a far smaller image: 400.
        (
            "image/png",
            png_declaring(3840, 2160),
            400,
            "not a decodable png",
        ),
    ];
    for (content_type, body, status, needle) in cases {
        assert!(body.len() < 1000);
        let started = Instant::now();
        let response = client()
            .post(format!("{}/v1/enhance", server.base))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        let got = response.status();
        let error: ErrorBody = response.json().await.unwrap();
        assert_eq!(got, status, "{needle}: {}", error.message);
        assert!(
            error.message.contains(needle),
            "{needle}: {}",
            error.message
        );
        assert!(started.elapsed() < PATIENCE);
    }
    assert_eq!(server.stats.enhance_calls(), 0);
    assert_still_serving(server.addr, None).await;
}

#[tokio::test]
async fn malformed_bodies_get_400() {
    let server = start_server(ServerConfig::default()).await;
    let requests: [&[u8]; 3] = [
        b"POST /v1/enhance HTTP/1.1\r\nhost: x\r\ncontent-type: image/png\r\n\
          transfer-encoding: chunked\r\n\r\nzz\r\nnot hex\r\n0\r\n\r\n",
        b"POST /v1/enhance HTTP/1.1\r\nhost: x\r\ncontent-type: image/png\r\n\
          content-length: 4\r\n\r\n\x89PNG",
        b"POST /v1/enhance?sharpness=%ZZ&contrast HTTP/1.1\r\nhost: x\r\n\
          content-type: image/png\r\ncontent-length: 0\r\n\r\n",
    ];
    for request in requests {
        let mut stream = connect_from("127.0.0.1", server.addr).await;
        let (status, text) = exchange(&mut stream, request).await;
        assert_eq!(status, 400, "{text}");
    }
    assert_still_serving(server.addr, None).await;
}

#[tokio::test]
async fn a_crowd_over_the_connection_limit_gets_503_not_silence() {
    let server = start_server(ServerConfig {
        limits: ServeLimits {
            max_connections: 40,
            ..Default::default()
        },
        latency: Duration::from_millis(200),
        ..Default::default()
    })
    .await;
    let png = encoded(&small_frame(), ImageFormat::Png);
    let crowd: Vec<_> = (0..120)
        .map(|i| {
            let (addr, png) = (server.addr, png.clone());
            tokio::spawn(async move {
                let from = format!("127.0.1.{}", i % 100 + 1);
                let mut stream = connect_from(&from, addr).await;
                let head = format!(
                    "POST /v1/enhance HTTP/1.1\r\nhost: x\r\ncontent-type: image/png\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n",
                    png.len()
                );
                let mut request = head.into_bytes();
                request.extend_from_slice(&png);
                exchange(&mut stream, &request).await.0
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for request in crowd {
        statuses.push(request.await.unwrap());
    }
    let ok = statuses.iter().filter(|&&s| s == 200).count();
    let refused = statuses.iter().filter(|&&s| s == 503).count();
    assert_eq!(ok + refused, 120, "{statuses:?}");
    assert!(ok >= 40 && refused > 0, "{ok} served, {refused} refused");
    assert_still_serving(server.addr, None).await;
}

#[tokio::test]
async fn no_path_parameter_and_no_cross_origin_grant() {
    let server: TestServer = start_server(ServerConfig::default()).await;
    for path in [
        "/v1/enhance/../stats",
        "/v1/%2e%2e/stats",
        "/../../etc/passwd",
    ] {
        let (status, _) = idempipe_testkit::raw_http::get(server.addr, path, "").await;
        assert!(status == 404 || status == 400, "{path}: {status}");
    }
    // A browser's preflight for a cross-site POST is never granted.
    let response = client()
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/v1/enhance", server.base),
        )
        .header("origin", "http://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    assert_ne!(response.status(), 200);
}
