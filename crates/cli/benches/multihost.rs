//! Scaling across worker hosts: one run submitted with its artifacts and output in
//! S3-compatible object storage (s3rver), served by 1, 2 and 4 `idempipe worker`
//! processes, each in a network namespace of its own (root only), against an
//! enhancement API with a fixed latency and a rate limit it enforces with 429s.
//!
//! `cargo bench -p idempipe --bench multihost`
//!
//! Environment: IDEMPIPE_BENCH_HOSTS (default "1,2,4"), IDEMPIPE_BENCH_RATE (the API's
//! limit and the run's `--api-rate`, calls/s, default 40), IDEMPIPE_BENCH_LATENCY_MS
//! (default 40), IDEMPIPE_BENCH_CONCURRENCY (per worker, default 2),
//! IDEMPIPE_BENCH_SECONDS (length of the generated 160x96 25 fps input, default 16),
//! IDEMPIPE_TEST_PG (the PostgreSQL server).
//!
//! Per row: frames/s and API calls/s over the frame phase (first frame claimed to last
//! frame finished), the limit, 429s the API sent, frames enhanced more than once
//! (real enhancements minus frames), and the workers' CPU per frame (user + system of
//! the worker processes and their ffmpeg children, from /proc).

#[path = "../tests/support/cluster.rs"]
mod cluster;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cluster::{Cluster, attempts};
use idempipe_engine::RunStatus;
use idempipe_enhance::server::ServerConfig;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One measured configuration.
struct Row {
    hosts: usize,
    frames: u64,
    secs: f64,
    calls: u64,
    throttled: u64,
    duplicates: i64,
    cpu_ms_per_frame: f64,
}

/// User + system + waited-for children's CPU of `pid`, in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(") ").map_or("", |(_, rest)| rest);
    let fields: Vec<f64> = after
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    // Fields 14..=17 of stat (utime, stime, cutime, cstime) are 11..=14 after the name.
    (11..=14)
        .map(|i| fields.get(i).copied().unwrap_or(0.0))
        .sum::<f64>()
        / 100.0
}

async fn measure(
    hosts: usize,
    input: &Path,
    rate: f64,
    latency: Duration,
    concurrency: usize,
) -> Row {
    let cluster = Cluster::start(ServerConfig {
        latency,
        rate_limit: rate,
        ..ServerConfig::default()
    })
    .await;
    let store = cluster.db.store().await;
    let run_id = cluster.submit_with(input, &["--api-rate", &rate.to_string()]);
    let machines: Vec<_> = (0..hosts).map(|_| cluster.net.host()).collect();
    let mut workers: Vec<_> = machines
        .iter()
        .enumerate()
        .map(|(i, h)| {
            cluster.worker_with(h, &format!("host{i}"), &cluster.s3.endpoint(), concurrency)
        })
        .collect();
    let status = cluster
        .wait_for_end(&store, run_id, Duration::from_secs(1800))
        .await;
    let cpu: f64 = workers.iter().map(|w| cpu_secs(w.id())).sum();
    workers.iter_mut().for_each(cluster::kill);
    assert_eq!(
        status,
        RunStatus::Completed,
        "{}",
        cluster.worker_log("host0")
    );
    let frame_tries: Vec<_> = attempts(&store, run_id)
        .await
        .into_iter()
        .filter(|(key, _)| key.starts_with("frame/"))
        .collect();
    let frames = frame_tries
        .iter()
        .filter(|(_, a)| a.outcome == "completed")
        .count() as u64;
    let start = frame_tries
        .iter()
        .map(|(_, a)| a.started_at)
        .min()
        .unwrap_or(0);
    let end = frame_tries
        .iter()
        .map(|(_, a)| a.ended_at)
        .max()
        .unwrap_or(0);
    let stats = cluster.api_state.stats().snapshot();
    Row {
        hosts,
        frames,
        secs: (end - start) as f64 / 1000.0,
        calls: stats.enhance_calls,
        throttled: stats.status(429),
        duplicates: stats.enhance_calls as i64 - frames as i64,
        cpu_ms_per_frame: cpu * 1000.0 / frames.max(1) as f64,
    }
}

fn main() {
    let hosts: Vec<usize> = std::env::var("IDEMPIPE_BENCH_HOSTS")
        .unwrap_or_else(|_| "1,2,4".into())
        .split(',')
        .filter_map(|h| h.trim().parse().ok())
        .collect();
    let rate: f64 = env_or("IDEMPIPE_BENCH_RATE", 40.0);
    let latency = Duration::from_millis(env_or("IDEMPIPE_BENCH_LATENCY_MS", 40));
    let concurrency: usize = env_or("IDEMPIPE_BENCH_CONCURRENCY", 2);
    let seconds: u32 = env_or("IDEMPIPE_BENCH_SECONDS", 16);
    let dir = idempipe_testkit::TempDir::new("bench-multihost");
    let input = dir.join("input.mp4");
    let ok = Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-y", "-f", "lavfi", "-i"])
        .arg("testsrc2=size=160x96:rate=25")
        .args([
            "-t",
            &seconds.to_string(),
            "-pix_fmt",
            "yuv420p",
            "-g",
            "25",
        ])
        .arg(&input)
        .status()
        .unwrap()
        .success();
    assert!(ok, "ffmpeg could not make the input");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "API: {} ms per call, limit {rate} calls/s (429 above); {concurrency} calls at once per worker",
        latency.as_millis()
    );
    println!(
        "{:>5} {:>7} {:>8} {:>9} {:>8} {:>7} {:>6} {:>11} {:>9}",
        "hosts",
        "frames",
        "secs",
        "frames/s",
        "calls/s",
        "limit",
        "429s",
        "duplicates",
        "cpu ms/fr"
    );
    for h in hosts {
        let row = rt.block_on(measure(h, &input, rate, latency, concurrency));
        println!(
            "{:>5} {:>7} {:>8.2} {:>9.1} {:>8.1} {:>7.0} {:>6} {:>11} {:>9.1}",
            row.hosts,
            row.frames,
            row.secs,
            row.frames as f64 / row.secs,
            row.calls as f64 / row.secs,
            rate,
            row.throttled,
            row.duplicates,
            row.cpu_ms_per_frame
        );
    }
}
