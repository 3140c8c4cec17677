//! HTTP/1 spoken by hand over TCP, for requests no client library would send: a header
//! dribbled a byte at a time, a raw `..` in a path, a lying Content-Length, a client
//! address other than 127.0.0.1.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Far above any limit under test: a connection the server should have answered or
/// closed and did not fails the test instead of hanging it.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A connection to `addr` from the local address `from` (every 127.0.0.0/8 address is
/// this machine, so one test can play several clients).
pub async fn connect_from(from: &str, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("a socket");
    socket
        .bind(format!("{from}:0").parse().expect("an IPv4 address"))
        .expect("bind the client address");
    socket.connect(addr).await.expect("connect")
}

/// Sends `request` and returns the response's status code and whole text.
pub async fn exchange(stream: &mut TcpStream, request: &[u8]) -> (u16, String) {
    stream.write_all(request).await.expect("send the request");
    let text = read_response(stream).await;
    (status_of(&text), text)
}

/// `GET path` on a fresh connection from 127.0.0.1 with the extra header lines
/// `headers` (each ending in `\r\n`); the status and the response text.
pub async fn get(addr: SocketAddr, path: &str, headers: &str) -> (u16, String) {
    let mut stream = connect_from("127.0.0.1", addr).await;
    let request =
        format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\n{headers}connection: close\r\n\r\n");
    exchange(&mut stream, request.as_bytes()).await
}

/// The status code of a response's text.
pub fn status_of(text: &str) -> u16 {
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"))
}

/// Reads one response (complete by its Content-Length, or until the server closes);
/// what arrived within [`PATIENCE`] if neither happens (empty if nothing did).
pub async fn read_response(stream: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let read = async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            if complete(&buf) {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(PATIENCE, read).await;
    String::from_utf8_lossy(&buf).into_owned()
}

/// Whether `buf` holds a whole response with a Content-Length.
fn complete(buf: &[u8]) -> bool {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    head.lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|n| n.trim().parse::<usize>().ok())
        .is_some_and(|n| buf.len() - end - 4 >= n)
}

/// Waits until the server closes `stream`; how long that took.
pub async fn closed_after(stream: &mut TcpStream) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    let wait = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(PATIENCE, wait)
        .await
        .expect("the server never closed the connection");
    started.elapsed()
}

/// An address of this machine that is not loopback (the one its default route would
/// use), so a test can reach a server on `0.0.0.0` as another machine would. Panics,
/// naming the problem, on a machine with loopback only.
pub fn non_loopback_ip() -> std::net::IpAddr {
    // Connecting a UDP socket sends nothing; it only picks the route and its source.
    ["192.0.2.1:9", "10.255.255.254:9", "203.0.113.1:9"]
        .iter()
        .find_map(|target| {
            let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
            socket.connect(target).ok()?;
            let ip = socket.local_addr().ok()?.ip();
            (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
        })
        .expect("this test needs a non-loopback IPv4 address on the machine (none has a route)")
}
