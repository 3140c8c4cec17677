//! Load test of the enhancement server on loopback: frames/s and client-side latency
//! for 1280x720 PNG and JPEG frames at 1, 8 and 32 concurrent clients.
//!
//! Run: `cargo bench -p idempipe-enhance --bench server` (release build).
//! Optional first argument: requests per row (default 160). Server and clients share
//! this process and machine, so client work (HTTP only; frames are encoded once up
//! front and answers are not decoded) competes with the server for the same cores.

#[path = "../tests/common/frames.rs"]
mod frames;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use axum::body::Bytes;
use idempipe_enhance::server::{ServerState, serve_with_state};
use idempipe_enhance::{ImageFormat, ServerConfig, codec};

fn main() {
    let requests: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(160);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(requests));
}

async fn run(requests: usize) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let state = ServerState::new(ServerConfig::default()).expect("config");
    let stats = state.stats();
    tokio::spawn(serve_with_state(listener, state, std::future::pending()));

    let (frame, source) = frames::frame_720p();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "frame: 1280x720 ({source}); {requests} requests per row; {cores} cores shared by server and clients\n"
    );
    println!(
        "{:<6} {:>8} {:>9} {:>10} {:>9} {:>9} {:>10}",
        "format", "clients", "requests", "frames/s", "p50 ms", "p99 ms", "body KiB"
    );
    for format in [ImageFormat::Png, ImageFormat::Jpeg] {
        let body = Bytes::from(codec::encode(&frame, format).expect("encode"));
        for clients in [1, 8, 32] {
            let (elapsed, mut latencies) =
                load(&base, format, body.clone(), clients, requests).await;
            latencies.sort_by(f64::total_cmp);
            let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
            println!(
                "{:<6} {clients:>8} {requests:>9} {:>10.1} {:>9.1} {:>9.1} {:>10}",
                format.to_string(),
                requests as f64 / elapsed,
                pct(0.5),
                pct(0.99),
                body.len() / 1024
            );
        }
    }
    println!("\nserver-side real enhancements: {}", stats.enhance_calls());
}

/// Sends `total` requests from `clients` concurrent loops; returns wall seconds and
/// per-request milliseconds.
async fn load(
    base: &str,
    format: ImageFormat,
    body: Bytes,
    clients: usize,
    total: usize,
) -> (f64, Vec<f64>) {
    idempipe_enhance::provider::tls::install_crypto_provider();
    let client = reqwest::Client::new();
    let url = format!("{base}/v1/enhance");
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (client, url, body, next) =
                (client.clone(), url.clone(), body.clone(), next.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < total {
                    let t = Instant::now();
                    let resp = client
                        .post(&url)
                        .header("content-type", format.content_type())
                        .body(reqwest::Body::from(body.clone()))
                        .send()
                        .await
                        .expect("send");
                    assert_eq!(resp.status(), 200, "server refused a request");
                    resp.bytes().await.expect("body");
                    latencies.push(t.elapsed().as_secs_f64() * 1000.0);
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::with_capacity(total);
    for task in tasks {
        all.extend(task.await.expect("client task"));
    }
    (started.elapsed().as_secs_f64(), all)
}
