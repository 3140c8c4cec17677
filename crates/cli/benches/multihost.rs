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
//! the worker processes and their ffmpeg children, from /proc). Under the table, per
//! row: API calls started in each second of the frame phase, the attempts that did not
//! complete (429s) and when, the longest gaps between calls, the mean time from claim
//! to call (limiter wait, reading the frame) and from call to end, and the limiter's
//! state at the end. The first line is the machine's load average.

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
    /// Where the frame phase's time went (printed under the table).
    detail: String,
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
    let limiter = store.limiter_list().await.unwrap();
    let detail = detail(hosts, &frame_tries, start, rate, &limiter);
    Row {
        hosts,
        frames,
        secs: (end - start) as f64 / 1000.0,
        calls: stats.enhance_calls,
        throttled: stats.status(429),
        duplicates: stats.enhance_calls as i64 - frames as i64,
        cpu_ms_per_frame: cpu * 1000.0 / frames.max(1) as f64,
        detail,
    }
}

/// Where the frame phase's time went: API calls per second of the phase (from each
/// attempt's external-call mark), the attempts that did not complete (429s and the like)
/// and when, the longest stretches without a call starting, the mean time from claim
/// to call (limiter wait and reading the frame) and from call to end (the call, writing
/// the result, recording), and the limiter's state at the end.
fn detail(
    hosts: usize,
    tries: &[(String, idempipe_engine::Attempt)],
    start: i64,
    rate: f64,
    limiters: &[idempipe_engine::LimiterState],
) -> String {
    let mut calls: Vec<i64> = tries
        .iter()
        .filter_map(|(_, a)| a.external_call_at)
        .collect();
    calls.sort_unstable();
    let secs = calls.last().map_or(0, |l| (l - start) / 1000 + 1) as usize;
    let mut per_sec = vec![0u32; secs];
    for c in &calls {
        per_sec[((c - start) / 1000) as usize] += 1;
    }
    let mut gaps: Vec<(i64, i64)> = calls
        .windows(2)
        .map(|w| (w[1] - w[0], w[0] - start))
        .collect();
    gaps.sort_unstable_by(|a, b| b.cmp(a));
    let slow_gap = (1000.0 / rate) as i64 * 2;
    let idle_ms: i64 = gaps.iter().filter(|g| g.0 > slow_gap).map(|g| g.0).sum();
    let failed: Vec<String> = tries
        .iter()
        .filter(|(_, a)| a.outcome != "completed")
        .map(|(_, a)| {
            format!(
                "{}@{:.1}s",
                a.outcome,
                (a.started_at - start) as f64 / 1000.0
            )
        })
        .collect();
    let mean = |f: &dyn Fn(&idempipe_engine::Attempt) -> Option<i64>| {
        let v: Vec<i64> = tries.iter().filter_map(|(_, a)| f(a)).collect();
        v.iter().sum::<i64>() as f64 / v.len().max(1) as f64
    };
    let to_call = mean(&|a| a.external_call_at.map(|c| c - a.started_at));
    let after_call = mean(&|a| a.external_call_at.map(|c| a.ended_at - c));
    let limiter: Vec<String> = limiters
        .iter()
        .filter(|l| l.config.name.starts_with("enhance-api"))
        .map(|l| format!("rate now {:.1}, throttles {}", l.current_rate, l.throttles))
        .collect();
    format!(
        "{hosts} hosts: calls per second {per_sec:?}\n  not completed: [{}]\n  \
         longest gaps between calls (ms, at s): {:?}; gaps over {slow_gap} ms add up to {idle_ms} ms\n  \
         claim to call {to_call:.0} ms, call to end {after_call:.0} ms (means); limiter: {}",
        failed.join(", "),
        gaps.iter()
            .take(5)
            .map(|(g, at)| (*g, format!("{:.1}", *at as f64 / 1000.0)))
            .collect::<Vec<_>>(),
        limiter.join("; ")
    )
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
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "load average (1, 5, 15 min): {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
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
    let mut details = Vec::new();
    for h in hosts {
        let row = rt.block_on(measure(h, &input, rate, latency, concurrency));
        details.push(row.detail.clone());
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
    for d in details {
        println!("{d}");
    }
}
