//! End-to-end throughput of the video pipeline next to one ffmpeg command doing
//! comparable work (`unsharp,eq=contrast=1.1` + libx264), on a generated 1280x720 clip.
//!
//! `cargo bench -p idempipe-video --bench pipeline`; `IDEMPIPE_BENCH_SECS=300` for a
//! 5 min clip (peak memory check). Prints frames/s, the ratio pipeline/ffmpeg, time per
//! stage from the attempt history, and this process's peak RSS (VmHWM) after each phase.
//! `IDEMPIPE_BENCH_HTTP=0` skips the http-provider phase.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use idempipe_enhance::server::{ServerConfig, ServerState, serve_with_state};
use idempipe_video::pipeline::{
    DriveOptions, DriveOutcome, ProcessRequest, ProgressStyle, Settings, drive, start_or_resume,
};

/// Clip length in seconds (30 unless `IDEMPIPE_BENCH_SECS` says otherwise).
fn clip_secs() -> u32 {
    std::env::var("IDEMPIPE_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30)
}

fn ffmpeg(args: &[&str]) {
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-y"])
        .args(args)
        .status()
        .expect("ffmpeg runs");
    assert!(status.success(), "ffmpeg {args:?} failed");
}

/// This process's peak resident set size in MiB.
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Runs the pipeline on `input` with `provider`; returns (wall time, report).
async fn pipeline(input: &Path, dir: &Path, provider: &str) -> (Duration, serde_json::Value) {
    let store = idempipe_engine::connect(&dir.join("state.db").display().to_string())
        .await
        .unwrap();
    let request = ProcessRequest {
        input: input.to_owned(),
        output: dir.join("out.mp4"),
        artifacts: dir.join("artifacts"),
        settings: Settings {
            provider: provider.into(),
            crf: 23, // ffmpeg's libx264 default, as in the comparison command
            ..Settings::default()
        },
    };
    let started = Instant::now();
    let start = start_or_resume(&store, &request).await.unwrap();
    let options = DriveOptions {
        progress: ProgressStyle::Quiet,
        ..DriveOptions::default()
    };
    let outcome = drive(store, start.run_id, &options, std::future::pending())
        .await
        .unwrap();
    let elapsed = started.elapsed();
    let DriveOutcome::Finished(run) = outcome else {
        unreachable!()
    };
    assert_eq!(run.status.as_str(), "completed");
    let report = std::fs::read(&start.params.report).unwrap();
    (elapsed, serde_json::from_slice(&report).unwrap())
}

fn print_stages(report: &serde_json::Value) {
    if let Some(stages) = report["stages"].as_object() {
        for (name, t) in stages {
            println!(
                "    {name:<10} items {:>6}  busy {:>8.1} s  wall {:>7.1} s",
                t["items"],
                t["busy_ms"].as_f64().unwrap_or(0.0) / 1000.0,
                t["wall_ms"].as_f64().unwrap_or(0.0) / 1000.0
            );
        }
    }
}

#[tokio::main]
async fn main() {
    let secs = clip_secs();
    let dir = std::env::temp_dir().join(format!("idempipe-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("in.mp4");
    let source = format!("testsrc2=size=1280x720:rate=30:duration={secs}");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        &source,
        "-pix_fmt",
        "yuv420p",
        input.to_str().unwrap(),
    ]);
    let frames = f64::from(secs * 30);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("clip: 1280x720, 30 fps, {secs} s, {frames} frames; {cores} cores");

    let started = Instant::now();
    let out = dir.join("ffmpeg.mp4");
    ffmpeg(&[
        "-i",
        input.to_str().unwrap(),
        "-vf",
        "unsharp,eq=contrast=1.1",
        "-c:v",
        "libx264",
        out.to_str().unwrap(),
    ]);
    let ffmpeg_secs = started.elapsed().as_secs_f64();
    println!(
        "ffmpeg unsharp+eq+libx264: {ffmpeg_secs:.1} s, {:.1} frames/s",
        frames / ffmpeg_secs
    );

    let local_dir = dir.join("local");
    std::fs::create_dir_all(&local_dir).unwrap();
    let (t, report) = pipeline(&input, &local_dir, "local").await;
    let local_secs = t.as_secs_f64();
    println!(
        "pipeline, local provider: {local_secs:.1} s, {:.1} frames/s, {:.2}x ffmpeg's time; peak RSS so far {:.0} MiB",
        frames / local_secs,
        local_secs / ffmpeg_secs,
        peak_rss_mib()
    );
    print_stages(&report);

    if std::env::var("IDEMPIPE_BENCH_HTTP").is_ok_and(|v| v == "0") {
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    let state = ServerState::new(ServerConfig::default()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = format!("http://{}", listener.local_addr().unwrap());
    let served = state.clone();
    tokio::spawn(serve_with_state(listener, served, std::future::pending()));
    let http_dir = dir.join("http");
    std::fs::create_dir_all(&http_dir).unwrap();
    let (t, report) = pipeline(&input, &http_dir, &api).await;
    let http_secs = t.as_secs_f64();
    println!(
        "pipeline, http provider (in-process server): {http_secs:.1} s, {:.1} frames/s, {:.2}x ffmpeg's time; server enhancements {}; peak RSS so far {:.0} MiB",
        frames / http_secs,
        http_secs / ffmpeg_secs,
        state.stats().enhance_calls(),
        peak_rss_mib()
    );
    print_stages(&report);
    let _ = std::fs::remove_dir_all(&dir);
}
