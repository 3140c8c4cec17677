//! Latency of a well-behaved client while others abuse the enhancement server: p50,
//! p99 and worst latency of one client sending a 176x144 PNG every 10 ms over a
//! keep-alive connection, with no abuse and then under each abuse in turn, and what
//! the abusers got back.
//!
//! Run: `cargo bench -p idempipe-enhance --bench abuse` (release build). Optional
//! first argument: seconds per scenario (default 5). Server, client and abusers share
//! this process and the machine's cores, as they would on one host.

#[path = "../tests/common/craft.rs"]
mod craft;
#[path = "../tests/common/frames.rs"]
mod frames;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use idempipe_enhance::server::{ServerState, serve_with_state};
use idempipe_enhance::{ImageFormat, ServerConfig, codec};
use idempipe_testkit::raw_http::{connect_from, read_response, status_of};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

const TOKEN: &str = "bench-token-0123456789abcdef";

/// Statuses (0: connection closed without an answer) the abusers got, by count.
type Tally = Arc<Mutex<BTreeMap<u16, u64>>>;

fn main() {
    let secs: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(Duration::from_secs(secs)));
}

async fn run(each: Duration) {
    idempipe_enhance::provider::tls::install_crypto_provider();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let config = ServerConfig {
        token: Some(TOKEN.into()),
        ..ServerConfig::default()
    };
    let limits = config.limits;
    let state = ServerState::new(config).expect("config");
    tokio::spawn(serve_with_state(listener, state, std::future::pending()));
    let frame = frames::try_video_frame("carphone_pristine.mp4", 10)
        .unwrap_or_else(|| frames::synthetic_frame(176, 144));
    let png = codec::encode(&frame, ImageFormat::Png).expect("encode");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "well-behaved client: 176x144 PNG ({} KiB) every 10 ms, keep-alive; {}s per scenario; {cores} cores shared",
        png.len() / 1024,
        each.as_secs()
    );
    println!(
        "limits: {} connections ({} per address), header read timeout {:?}, {} MiB body, 60 s per request\n",
        limits.max_connections,
        limits.max_connections_per_ip,
        limits.header_read_timeout,
        idempipe_enhance::server::DEFAULT_MAX_BODY_BYTES >> 20
    );
    println!(
        "{:<22} {:>6} {:>8} {:>8} {:>8} {:>6}  abusers got",
        "scenario", "calls", "p50 ms", "p99 ms", "max ms", "failed"
    );
    for scenario in Scenario::ALL {
        let (stop, stopped) = watch::channel(false);
        let tally = Tally::default();
        let abusers = scenario.start(addr, stopped, tally.clone());
        // Let the abuse build up before measuring.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (latencies, failed) = well_behaved(addr, &png, each).await;
        stop.send_replace(true);
        for abuser in abusers {
            abuser.abort();
        }
        let summary = summarize(&tally.lock().expect("tally"));
        print_row(scenario.name(), &latencies, failed, &summary);
        // Let the server drop the abusers' connections before the next scenario.
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
}

/// One client, one keep-alive connection, a request every 10 ms for `each`.
async fn well_behaved(addr: SocketAddr, png: &[u8], each: Duration) -> (Vec<Duration>, u64) {
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/v1/enhance");
    let mut latencies = Vec::new();
    let mut failed = 0;
    let end = Instant::now() + each;
    while Instant::now() < end {
        let started = Instant::now();
        let result = client
            .post(&url)
            .bearer_auth(TOKEN)
            .header("content-type", "image/png")
            .body(png.to_vec())
            .send()
            .await;
        let ok = match result {
            Ok(r) => r.status() == 200 && r.bytes().await.is_ok(),
            Err(_) => false,
        };
        if ok {
            latencies.push(started.elapsed());
        } else {
            failed += 1;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (latencies, failed)
}

#[derive(Debug, Clone, Copy)]
enum Scenario {
    None,
    Slowloris,
    ConnectionFlood,
    StalledUploads,
    OversizedBodies,
    DecompressionBombs,
    WrongToken,
    Malformed,
}

impl Scenario {
    const ALL: [Scenario; 8] = [
        Scenario::None,
        Scenario::Slowloris,
        Scenario::ConnectionFlood,
        Scenario::StalledUploads,
        Scenario::OversizedBodies,
        Scenario::DecompressionBombs,
        Scenario::WrongToken,
        Scenario::Malformed,
    ];

    fn name(self) -> &'static str {
        match self {
            Scenario::None => "no abuse",
            Scenario::Slowloris => "slowloris x300",
            Scenario::ConnectionFlood => "connection flood x1200",
            Scenario::StalledUploads => "stalled uploads x150",
            Scenario::OversizedBodies => "40 MiB bodies x8",
            Scenario::DecompressionBombs => "bomb PNGs x8",
            Scenario::WrongToken => "wrong token x8",
            Scenario::Malformed => "malformed HTTP x8",
        }
    }

    /// Starts the abusers; they run until `stop`.
    fn start(
        self,
        addr: SocketAddr,
        stop: watch::Receiver<bool>,
        tally: Tally,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let spawn = |n: usize, job: fn(SocketAddr, usize, Tally) -> Abuse| {
            (0..n)
                .map(|i| {
                    let (tally, mut stop) = (tally.clone(), stop.clone());
                    tokio::spawn(async move {
                        loop {
                            tokio::select! {
                                () = job(addr, i, tally.clone()) => {}
                                _ = stop.wait_for(|s| *s) => break,
                            }
                        }
                    })
                })
                .collect()
        };
        match self {
            Scenario::None => Vec::new(),
            Scenario::Slowloris => spawn(300, |a, i, t| Box::pin(slowloris(a, i, t))),
            Scenario::ConnectionFlood => spawn(1200, |a, i, t| Box::pin(idle(a, i, t))),
            Scenario::StalledUploads => spawn(150, |a, i, t| Box::pin(stalled(a, i, t))),
            Scenario::OversizedBodies => spawn(8, |a, i, t| Box::pin(oversized(a, i, t))),
            Scenario::DecompressionBombs => spawn(8, |a, i, t| Box::pin(bomb(a, i, t))),
            Scenario::WrongToken => spawn(8, |a, i, t| Box::pin(wrong_token(a, i, t))),
            Scenario::Malformed => spawn(8, |a, i, t| Box::pin(malformed(a, i, t))),
        }
    }
}

type Abuse = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// A client address for abuser `i`: many addresses, as a botnet would have.
fn source(i: usize) -> String {
    format!("127.1.{}.{}", i / 200, i % 200 + 1)
}

fn count(tally: &Tally, status: u16) {
    *tally.lock().expect("tally").entry(status).or_default() += 1;
}

/// Sends a request line and then a header byte every 500 ms until cut off.
async fn slowloris(addr: SocketAddr, i: usize, tally: Tally) {
    let mut stream = connect_from(&source(i), addr).await;
    let _ = stream
        .write_all(b"POST /v1/enhance HTTP/1.1\r\nx-a: ")
        .await;
    while stream.write_all(b"a").await.is_ok() {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if let Ok(Ok(0)) | Ok(Err(_)) =
            tokio::time::timeout(Duration::from_millis(1), stream.peek(&mut [0u8; 1])).await
        {
            break;
        }
    }
    count(&tally, 0);
}

/// Connects and says nothing until closed (or answered).
async fn idle(addr: SocketAddr, i: usize, tally: Tally) {
    let mut stream = connect_from(&source(i), addr).await;
    let text = read_response(&mut stream).await;
    count(&tally, if text.is_empty() { 0 } else { status_of(&text) });
}

/// Declares a 5000-byte body, sends 4 bytes and stalls.
async fn stalled(addr: SocketAddr, i: usize, tally: Tally) {
    let mut stream = connect_from(&source(i), addr).await;
    let head = format!(
        "POST /v1/enhance HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\n\
         content-type: image/png\r\ncontent-length: 5000\r\n\r\n\x7fPNG"
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let text = read_response(&mut stream).await;
    count(&tally, if text.is_empty() { 0 } else { status_of(&text) });
}

/// Streams a 40 MiB chunked body (over the 32 MiB limit).
async fn oversized(addr: SocketAddr, i: usize, tally: Tally) {
    let mut stream = connect_from(&source(i), addr).await;
    let head = format!(
        "POST /v1/enhance HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\n\
         content-type: image/png\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let chunk = format!("100000\r\n{}\r\n", "z".repeat(0x10_0000));
    for _ in 0..40 {
        if stream.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let text = read_response(&mut stream).await;
    count(&tally, if text.is_empty() { 0 } else { status_of(&text) });
}

/// Posts a PNG declaring 100000x100000 pixels, or 3840x2160 with 8x8 pixels of data.
async fn bomb(addr: SocketAddr, i: usize, tally: Tally) {
    let body = if i.is_multiple_of(2) {
        craft::png_declaring(100_000, 100_000)
    } else {
        craft::png_declaring(3840, 2160)
    };
    post_raw(addr, i, TOKEN, &body, &tally).await;
}

/// Posts a real frame with a wrong token.
async fn wrong_token(addr: SocketAddr, i: usize, tally: Tally) {
    post_raw(addr, i, "wrong-token-wrong-token", b"\x89PNG", &tally).await;
}

/// Sends bytes that are not HTTP.
async fn malformed(addr: SocketAddr, i: usize, tally: Tally) {
    let mut stream = connect_from(&source(i), addr).await;
    let _ = stream
        .write_all(b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03 garbage\r\n\r\n")
        .await;
    let text = read_response(&mut stream).await;
    count(&tally, if text.is_empty() { 0 } else { status_of(&text) });
}

async fn post_raw(addr: SocketAddr, i: usize, token: &str, body: &[u8], tally: &Tally) {
    let mut stream = connect_from(&source(i), addr).await;
    let head = format!(
        "POST /v1/enhance HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n\
         content-type: image/png\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    let _ = stream.write_all(&request).await;
    let text = read_response(&mut stream).await;
    count(tally, if text.is_empty() { 0 } else { status_of(&text) });
}

fn summarize(tally: &BTreeMap<u16, u64>) -> String {
    tally
        .iter()
        .map(|(status, n)| match status {
            0 => format!("{n} closed"),
            s => format!("{n}x {s}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn print_row(name: &str, latencies: &[Duration], failed: u64, abusers: &str) {
    let mut ms: Vec<f64> = latencies.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| {
        ms.get(((ms.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    println!(
        "{name:<22} {:>6} {:>8.1} {:>8.1} {:>8.1} {failed:>6}  {abusers}",
        ms.len(),
        at(0.5),
        at(0.99),
        ms.last().copied().unwrap_or(f64::NAN)
    );
}
