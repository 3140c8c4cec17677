//! The connection limits over real TCP: a slow or idle client is cut off after the
//! header read timeout, connections over the caps get a 503 (per client address too),
//! oversized headers a 431, and well-behaved clients are served all along.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing;
use idempipe_http::{ServeLimits, serve};
use idempipe_testkit::raw_http::{PATIENCE, closed_after, connect_from, exchange, get};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start(limits: ServeLimits) -> Server {
    let app = Router::new()
        .route("/", routing::get(|| async { "ok" }))
        .route(
            "/slow",
            routing::get(|| async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                "slow ok"
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, app, limits, async {
        let _ = stopped.await;
    }));
    Server {
        addr,
        stop: Some(stop),
        task,
    }
}

async fn get_status(addr: SocketAddr, path: &str) -> u16 {
    get(addr, path, "").await.0
}

fn quick_timeout() -> ServeLimits {
    ServeLimits {
        header_read_timeout: Duration::from_millis(500),
        ..Default::default()
    }
}

#[tokio::test]
async fn slowloris_is_cut_off_while_others_are_served() {
    let server = start(quick_timeout()).await;
    let addr = server.addr;
    // 20 clients sending their headers a byte every 100 ms, forever.
    let attackers: Vec<_> = (0..20)
        .map(|_| {
            tokio::spawn(async move {
                let mut stream = connect_from("127.0.0.2", addr).await;
                stream.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
                let started = Instant::now();
                let mut buf = [0u8; 64];
                loop {
                    if stream.write_all(b"x").await.is_err() {
                        break;
                    }
                    tokio::select! {
                        r = stream.read(&mut buf) => if matches!(r, Ok(0) | Err(_)) { break },
                        () = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                    assert!(started.elapsed() < PATIENCE, "slowloris never cut off");
                }
                started.elapsed()
            })
        })
        .collect();
    for _ in 0..10 {
        assert_eq!(get_status(addr, "/").await, 200);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for attacker in attackers {
        let held = attacker.await.unwrap();
        assert!(held < Duration::from_secs(3), "held {held:?}");
    }
}

#[tokio::test]
async fn idle_connections_are_closed_before_and_between_requests() {
    let server = start(quick_timeout()).await;
    let mut silent = connect_from("127.0.0.1", server.addr).await;
    assert!(closed_after(&mut silent).await < Duration::from_secs(3));

    let mut keep_alive = connect_from("127.0.0.1", server.addr).await;
    let (status, _) = exchange(&mut keep_alive, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert_eq!(status, 200);
    assert!(closed_after(&mut keep_alive).await < Duration::from_secs(3));
}

#[tokio::test]
async fn over_the_connection_limit_gets_503_then_capacity_returns() {
    let server = start(ServeLimits {
        max_connections: 4,
        ..Default::default()
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut stream = connect_from("127.0.0.1", server.addr).await;
        let (status, _) = exchange(&mut stream, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
        assert_eq!(status, 200);
        held.push(stream);
    }
    let mut extra = connect_from("127.0.0.3", server.addr).await;
    let (status, text) = exchange(&mut extra, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("retry-after: 1"), "{text}");
    assert!(text.contains("server's connection limit"), "{text}");

    drop(held);
    let deadline = Instant::now() + PATIENCE;
    while get_status(server.addr, "/").await != 200 {
        assert!(Instant::now() < deadline, "capacity never came back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn one_address_cannot_take_every_connection() {
    let server = start(ServeLimits {
        max_connections: 10,
        max_connections_per_ip: 2,
        ..Default::default()
    })
    .await;
    let _a = connect_from("127.0.0.2", server.addr).await;
    let _b = connect_from("127.0.0.2", server.addr).await;
    // Let the server accept both before the third arrives.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut third = connect_from("127.0.0.2", server.addr).await;
    let (status, text) = exchange(&mut third, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("per client address"), "{text}");
    assert_eq!(get_status(server.addr, "/").await, 200);
}

#[tokio::test]
async fn oversized_headers_get_431_and_the_server_goes_on() {
    let server = start(ServeLimits {
        max_header_bytes: 16 * 1024,
        ..Default::default()
    })
    .await;
    let mut stream = connect_from("127.0.0.1", server.addr).await;
    let big = format!(
        "GET / HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let (status, _) = exchange(&mut stream, big.as_bytes()).await;
    assert_eq!(status, 431);
    let mut many = connect_from("127.0.0.1", server.addr).await;
    let headers: String = (0..200).map(|i| format!("x-h{i}: v\r\n")).collect();
    let request = format!("GET / HTTP/1.1\r\nhost: x\r\n{headers}\r\n");
    let (status, _) = exchange(&mut many, request.as_bytes()).await;
    assert_eq!(status, 431);
    assert_eq!(get_status(server.addr, "/").await, 200);
}

#[tokio::test]
async fn malformed_requests_get_400() {
    let server = start(ServeLimits::default()).await;
    for garbage in [
        &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage-tls-hello\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nhost: x\r\ncontent-length: -5\r\n\r\n",
        b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
    ] {
        let mut stream = connect_from("127.0.0.1", server.addr).await;
        let (status, text) = exchange(&mut stream, garbage).await;
        assert!(status == 400 || status == 505, "{status}: {text}");
    }
    assert_eq!(get_status(server.addr, "/").await, 200);
}

#[tokio::test]
async fn shutdown_finishes_the_request_in_flight() {
    let mut server = start(ServeLimits::default()).await;
    let addr = server.addr;
    let slow = tokio::spawn(async move { get_status(addr, "/slow").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.stop.take().unwrap().send(()).unwrap();
    assert_eq!(slow.await.unwrap(), 200);
    tokio::time::timeout(PATIENCE, server.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(TcpStream::connect(addr).await.is_err());
}

#[test]
fn bad_limits_are_refused_naming_the_field() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let limits = ServeLimits {
            max_connections: 0,
            ..Default::default()
        };
        let err = serve(listener, Router::new(), limits, std::future::pending())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("max_connections"), "{err}");
    });
}
