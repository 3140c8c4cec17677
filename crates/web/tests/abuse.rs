//! The dashboard under abuse, over real TCP: requests without or with a wrong token
//! from another machine's address, forged Host and Origin headers, raw path traversal
//! (no client library would send these paths), and a crowd over the connection limit.
//! Each gets its status and the dashboard keeps serving.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{TOKEN, TestDb, fixture};
use idempipe_http::ServeLimits;
use idempipe_testkit::raw_http::{connect_from, exchange, get, non_loopback_ip};
use idempipe_web::{AppState, serve};

/// Serves the fixture's store on `bind` with `token` and `limits`; the dashboard's
/// address on 127.0.0.1, and the run id.
async fn start(
    db: &TestDb,
    bind: &str,
    token: Option<&str>,
    limits: ServeLimits,
) -> (SocketAddr, i64) {
    let store = db.store().await;
    let fx = fixture(&store, db.dir.path()).await;
    let state = AppState::builder(store)
        .token(token.map(String::from))
        .artifact_roots(vec![fx.artifacts.clone()])
        .limits(limits)
        .build()
        .unwrap();
    let listener = tokio::net::TcpListener::bind(bind).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(serve(listener, state, std::future::pending()));
    (SocketAddr::from(([127, 0, 0, 1], port)), fx.run)
}

/// The JSON `error` code of a raw response.
fn code_of(text: &str) -> String {
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let json: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    json["error"].as_str().unwrap_or_default().to_string()
}

/// `GET path` from this machine's non-loopback address with extra header lines.
async fn remote_get(remote: SocketAddr, path: &str, headers: &str) -> (u16, String) {
    let mut stream = connect_from(&remote.ip().to_string(), remote).await;
    let request =
        format!("GET {path} HTTP/1.1\r\nhost: {remote}\r\n{headers}connection: close\r\n\r\n");
    exchange(&mut stream, request.as_bytes()).await
}

#[tokio::test]
async fn the_token_is_required_from_another_address() {
    let db = TestDb::sqlite();
    let (local, run) = start(&db, "0.0.0.0:0", Some(TOKEN), ServeLimits::default()).await;
    let remote = SocketAddr::new(non_loopback_ip(), local.port());
    let run_page = format!("/runs/{run}");
    let refused = [
        ("/api/runs", String::new()),
        (
            "/api/runs",
            "authorization: Bearer not-the-token-at-all\r\n".into(),
        ),
        (
            "/api/runs",
            "authorization: bearer test-token-0123456789abcdef\r\n".into(),
        ),
        (
            "/api/runs",
            "cookie: idempipe_token=not-the-token-at-all\r\n".into(),
        ),
        ("/api/runs?token=not-the-token-at-all", String::new()),
        ("/metrics", String::new()),
        (run_page.as_str(), String::new()),
    ];
    for (path, headers) in &refused {
        let (status, text) = remote_get(remote, path, headers).await;
        assert_eq!(status, 401, "{path} {headers}: {text}");
    }
    let bearer = format!("authorization: Bearer {TOKEN}\r\n");
    let (status, text) = remote_get(remote, "/api/runs", &bearer).await;
    assert_eq!(status, 200, "{text}");
    let (status, text) = remote_get(remote, &format!("/?token={TOKEN}"), "").await;
    assert_eq!(status, 303, "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("set-cookie: idempipe_token=")
    );
}

#[tokio::test]
async fn forged_host_and_origin_are_refused() {
    let db = TestDb::sqlite();
    let (addr, run) = start(&db, "127.0.0.1:0", None, ServeLimits::default()).await;
    // DNS rebinding: a page on evil.example resolving its name to 127.0.0.1.
    for host in [
        "evil.example",
        "evil.example:80",
        "127.0.0.1.evil.example",
        "[::2]",
    ] {
        let mut stream = connect_from("127.0.0.1", addr).await;
        let request =
            format!("GET /api/runs HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n");
        let (status, text) = exchange(&mut stream, request.as_bytes()).await;
        assert_eq!(status, 403, "{host}: {text}");
        assert_eq!(code_of(&text), "forbidden");
    }
    // A cross-site form post, and a forged Origin on the action.
    for (origin, fetch_site) in [
        ("http://evil.example", "cross-site"),
        ("null", "same-origin"),
        ("http://127.0.0.1:1", "same-origin"),
    ] {
        let mut stream = connect_from("127.0.0.1", addr).await;
        let request = format!(
            "POST /api/runs/{run}/cancel HTTP/1.1\r\nhost: {addr}\r\norigin: {origin}\r\n\
             sec-fetch-site: {fetch_site}\r\nx-idempipe-action: 1\r\ncontent-length: 0\r\n\
             connection: close\r\n\r\n"
        );
        let (status, text) = exchange(&mut stream, request.as_bytes()).await;
        assert_eq!(status, 403, "{origin}: {text}");
    }
    let (status, text) = get(addr, &format!("/api/runs/{run}"), "").await;
    assert_eq!(status, 200, "{text}");
    assert!(
        text.contains("\"running\""),
        "the run was not cancelled: {text}"
    );
}

#[tokio::test]
async fn raw_path_traversal_reaches_nothing() {
    let db = TestDb::sqlite();
    let (addr, run) = start(&db, "127.0.0.1:0", None, ServeLimits::default()).await;
    let paths = [
        format!("/api/runs/{run}/frames/../../../../etc/passwd/original.png"),
        format!("/api/runs/{run}/frames/..%2F..%2F..%2F..%2Fetc%2Fpasswd/original.png"),
        format!("/api/runs/{run}/frames/frame/%2e%2e/%2e%2e/secret/original.png"),
        format!("/api/runs/{run}/frames/frame\\..\\..\\secret/original.png"),
        format!("/api/runs/{run}/frames/frame/000000%00/original.png"),
        format!("/api/runs/{run}/items/frame/..%2F..%2Fetc/attempts"),
        format!("/api/runs/{run}/compare/..%2F0/before.png"),
        "/assets/../../Cargo.toml".to_string(),
        "/assets/..%2F..%2FCargo.toml".to_string(),
        "/assets/%2e%2e%2f%2e%2e%2fCargo.toml".to_string(),
        "/../../../../etc/passwd".to_string(),
        format!("/api/runs/{run}/output/../../../etc/passwd"),
    ];
    for path in &paths {
        let (status, text) = get(addr, path, "").await;
        assert!(
            matches!(status, 400 | 403 | 404),
            "{path}: {status}\n{text}"
        );
        assert!(
            !text.contains("root:") && !text.contains("[package]"),
            "{path} leaked a file"
        );
    }
    let (status, _) = get(
        addr,
        &format!("/api/runs/{run}/frames/frame/000000/original.png"),
        "",
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_crowd_over_the_connection_limit_gets_503_and_the_dashboard_recovers() {
    let db = TestDb::sqlite();
    let limits = ServeLimits {
        max_connections: 8,
        // Long enough that the crowd below is still silent when the ninth comes, on a
        // loaded machine too.
        header_read_timeout: Duration::from_secs(3),
        ..Default::default()
    };
    let (addr, _) = start(&db, "127.0.0.1:0", None, limits).await;
    // Eight silent connections take every slot...
    let mut silent = Vec::new();
    for i in 0..8 {
        silent.push(connect_from(&format!("127.0.2.{}", i + 1), addr).await);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, text) = get(addr, "/api/runs", "").await;
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("retry-after"), "{text}");
    // ...until the header read timeout closes them.
    for stream in &mut silent {
        idempipe_testkit::raw_http::closed_after(stream).await;
    }
    let mut status = 0;
    for _ in 0..50 {
        status = get(addr, "/api/runs", "").await.0;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, 200);
}
