//! The video pipeline next to the ffmpeg command a user would write instead, run side
//! by side on the same generated clip:
//!
//! ```text
//! ffmpeg -i IN -vf "unsharp,eq=contrast=1.1" -c:v libx264 -preset medium -crf 18 -c:a copy OUT
//! ```
//!
//! `cargo bench -p idempipe-video --bench pipeline` prints one row per resolution, clip
//! length and provider: the wall-time ratio pipeline / ffmpeg, CPU milliseconds per frame
//! of the pipeline's own process (ffmpeg children and the enhancement itself excluded),
//! its peak RSS and the peak size of its artifact directory.
//!
//! Each pipeline run is a child process (this binary, re-executed), so its CPU and peak
//! RSS are its own: `/proc/self/stat` and `VmHWM` at its end, less the CPU of the
//! bench's sampling thread (which walks the artifact directory every 200 ms). CPU of the local provider's
//! enhancement is measured per frame by the pipeline (thread CPU time around the
//! algorithm, the report's `enhance_cpu_ms`) and subtracted. The http provider talks to
//! the project's enhancement server in another child process (what `idempipe
//! enhance-server` runs), whose CPU and cache are not counted.
//!
//! Inputs: `testsrc2` with a 440 Hz tone, 30 fps, encoded by libx264 with ffmpeg's
//! default keyframe interval (250 frames) and AAC audio.
//!
//! Environment (comma-separated lists):
//! - `IDEMPIPE_BENCH_RES`: `240p,720p,1080p` (the default; 240p is 320x240);
//! - `IDEMPIPE_BENCH_SECS`: clip lengths in seconds (default `10,30`; add `300` for 5 min);
//! - `IDEMPIPE_BENCH_PROVIDERS`: `local,http` (default both);
//! - `IDEMPIPE_BENCH_GOP`: keyframe interval of the inputs (default: ffmpeg's, 250);
//! - `IDEMPIPE_BENCH_LONG=7200`: instead of the table, one 720p local run of a clip that
//!   long (2 hours; not for CI), printing RSS and disk in each tenth of the run to show
//!   they stay flat;
//! - `IDEMPIPE_BENCH_TIMELINE=1`: under each row, when each item ran (from its attempts,
//!   in seconds since the pipeline started) and how many cores the pipeline's process
//!   tree (itself and its ffmpeg children) kept busy in each half second.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use idempipe_enhance::server::{ServerConfig, ServerState, serve_with_state};
use idempipe_video::pipeline::disk::dir_size;
use idempipe_video::pipeline::{
    DriveOptions, DriveOutcome, ProcessRequest, ProgressStyle, Settings, drive, start_or_resume,
};
use serde_json::{Value, json};

/// Set in a child that runs one pipeline: `INPUT|DIR|PROVIDER`.
const CHILD_ENV: &str = "IDEMPIPE_BENCH_CHILD";
/// Set in the child that serves the enhancement API.
const SERVER_ENV: &str = "IDEMPIPE_BENCH_SERVER";
/// Clock ticks per second of `/proc/self/stat` times (USER_HZ, 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;
/// How often the child samples its RSS and artifact directory.
const SAMPLE_EVERY: Duration = Duration::from_millis(200);

fn list(var: &str, default: &str) -> Vec<String> {
    std::env::var(var)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

fn size_of(res: &str) -> (u32, u32) {
    match res {
        "240p" => (320, 240),
        "720p" => (1280, 720),
        "1080p" => (1920, 1080),
        other => panic!("IDEMPIPE_BENCH_RES: unknown resolution {other:?} (240p, 720p, 1080p)"),
    }
}

fn ffmpeg(args: &[&str]) {
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-y"])
        .args(args)
        .status()
        .expect("ffmpeg runs");
    assert!(status.success(), "ffmpeg {args:?} failed");
}

/// A `secs`-long `w`x`h` clip with audio, keyframes every `gop` frames (ffmpeg's
/// default when `None`). Encoded with `veryfast` to keep generation short; the keyframe
/// interval is what matters to the pipeline.
fn make_input(path: &Path, (w, h): (u32, u32), secs: u32, gop: Option<u32>) {
    let video = format!("testsrc2=size={w}x{h}:rate=30:duration={secs}");
    let audio = format!("sine=frequency=440:sample_rate=48000:duration={secs}");
    let mut args = vec![
        "-f", "lavfi", "-i", &video, "-f", "lavfi", "-i", &audio, "-pix_fmt", "yuv420p", "-c:v",
        "libx264", "-preset", "veryfast", "-c:a", "aac",
    ];
    let gop = gop.map(|g| g.to_string());
    if let Some(g) = &gop {
        args.extend(["-g", g]);
    }
    args.push(path.to_str().unwrap());
    ffmpeg(&args);
}

/// Wall seconds of the reference command on `input`.
fn reference(input: &Path, out: &Path) -> f64 {
    let started = Instant::now();
    ffmpeg(&[
        "-i",
        input.to_str().unwrap(),
        "-vf",
        "unsharp,eq=contrast=1.1",
        "-c:v",
        "libx264",
        "-preset",
        "medium",
        "-crf",
        "18",
        "-c:a",
        "copy",
        out.to_str().unwrap(),
    ]);
    started.elapsed().as_secs_f64()
}

/// This process's user + system CPU seconds.
fn own_cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime is the 12th, stime the 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (tick(11) + tick(12)) / TICKS_PER_SEC
}

/// The `/proc/PID/stat` fields after the command name (which may hold spaces).
fn stat_fields(pid: &str) -> Vec<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    rest.split_whitespace()
        .map(|v| v.parse::<f64>().unwrap_or(0.0))
        .collect()
}

/// CPU seconds of this process, its children that ended (ffmpeg runs it waited for) and
/// its children running now.
fn tree_cpu_secs() -> f64 {
    let me = std::process::id() as f64;
    let own = stat_fields("self");
    let field = |f: &[f64], i: usize| f.get(i).copied().unwrap_or(0.0);
    let mut ticks = (11..=14).map(|i| field(&own, i)).sum::<f64>();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let f = stat_fields(pid);
        if field(&f, 1) == me {
            ticks += field(&f, 11) + field(&f, 12);
        }
    }
    ticks / TICKS_PER_SEC
}

/// CPU milliseconds the calling thread has used (`/proc/thread-self/schedstat`).
fn thread_cpu_ms() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |ns| ns / 1e6)
}

/// A `VmXXX:` value of this process in MiB.
fn status_mib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The child: runs the pipeline once and prints its figures as one JSON line.
fn child(spec: &str) {
    let parts: Vec<&str> = spec.split('|').collect();
    let (input, dir, provider) = (Path::new(parts[0]), Path::new(parts[1]), parts[2]);
    let artifacts = dir.join("artifacts");
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (stop, artifacts) = (stop.clone(), artifacts.clone());
        std::thread::spawn(move || {
            // (seconds since start, RSS MiB, artifact MiB, CPU seconds of the process tree)
            let started = Instant::now();
            let mut samples = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let disk = dir_size(&artifacts) as f64 / (1024.0 * 1024.0);
                samples.push((
                    started.elapsed().as_secs_f64(),
                    status_mib("VmRSS:"),
                    disk,
                    tree_cpu_secs(),
                ));
                std::thread::sleep(SAMPLE_EVERY);
            }
            // Walking thousands of frame files is the bench's cost, not the pipeline's.
            (samples, thread_cpu_ms())
        })
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (wall, report, timeline) = rt.block_on(pipeline(input, dir, &artifacts, provider));
    drop(rt);
    stop.store(true, Ordering::Relaxed);
    let (samples, sampler_cpu_ms) = sampler.join().unwrap();
    let cpu = own_cpu_secs() - sampler_cpu_ms / 1000.0;
    let line = json!({
        "wall_secs": wall,
        "cpu_secs": cpu,
        "sampler_cpu_ms": sampler_cpu_ms,
        "enhance_cpu_ms": report["enhance_cpu_ms"],
        "frames": report["frames"]["total"],
        "peak_rss_mib": status_mib("VmHWM:"),
        "peak_disk_mib": samples.iter().map(|s| s.2).fold(0.0, f64::max),
        "samples": samples,
        "stages": report["stages"],
        "timeline": timeline,
    });
    println!("{line}");
}

/// Runs the pipeline on `input` with `provider`; returns (wall seconds, report,
/// timeline of the items' attempts).
async fn pipeline(
    input: &Path,
    dir: &Path,
    artifacts: &Path,
    provider: &str,
) -> (f64, Value, Value) {
    let store = idempipe_engine::connect(&dir.join("state.db").display().to_string())
        .await
        .unwrap();
    let request = ProcessRequest {
        input: input.to_owned(),
        output: dir.join("out.mp4"),
        artifacts: artifacts.to_owned(),
        settings: Settings {
            provider: provider.into(),
            ..Settings::default()
        },
    };
    let started = Instant::now();
    let started_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let start = start_or_resume(&store, &request).await.unwrap();
    let options = DriveOptions {
        progress: ProgressStyle::Quiet,
        ..DriveOptions::default()
    };
    let outcome = drive(
        store.clone(),
        start.run_id,
        &options,
        std::future::pending(),
    )
    .await
    .unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    let DriveOutcome::Finished(run) = outcome else {
        unreachable!()
    };
    assert_eq!(run.status.as_str(), "completed", "{:?}", run.summary);
    let report = std::fs::read(&start.params.report).unwrap();
    let timeline = if std::env::var("IDEMPIPE_BENCH_TIMELINE").is_ok_and(|v| v == "1") {
        timeline(&store, start.run_id, started_ms).await
    } else {
        Value::Null
    };
    (elapsed, serde_json::from_slice(&report).unwrap(), timeline)
}

/// Each item's attempts, `[stage/key, start, end]` in seconds since `started_ms`, in
/// start order; items of a stage with more than a few items are merged into one line.
async fn timeline(store: &idempipe_engine::SharedStore, run_id: i64, started_ms: i64) -> Value {
    let filter = idempipe_engine::store::ItemFilter {
        run_id,
        stage: None,
        statuses: Vec::new(),
        limit: 100_000,
        after_id: 0,
    };
    let items = store.item_list(&filter).await.unwrap();
    let mut per_stage = std::collections::HashMap::<&str, usize>::new();
    for item in &items {
        *per_stage.entry(item.stage.as_str()).or_default() += 1;
    }
    let many = |stage: &str| per_stage[stage] > 8;
    let secs = |ms: i64| (ms - started_ms) as f64 / 1000.0;
    let mut lines: Vec<(String, f64, f64)> = Vec::new();
    for item in &items {
        for a in store.attempt_list(item.id).await.unwrap() {
            let name = if many(&item.stage) {
                format!("{} (all)", item.stage)
            } else {
                format!("{}/{}", item.stage, item.key)
            };
            let (start, end) = (secs(a.started_at), secs(a.ended_at));
            match lines.iter_mut().find(|l| l.0 == name) {
                Some(l) => {
                    l.1 = l.1.min(start);
                    l.2 = l.2.max(end);
                }
                None => lines.push((name, start, end)),
            }
        }
    }
    if let Ok(run) = store.run_get(run_id).await {
        lines.push((
            "run created".into(),
            secs(run.created_at),
            secs(run.created_at),
        ));
        if let Some(at) = run.finished_at {
            lines.push(("run finished".into(), secs(at), secs(at)));
        }
    }
    lines.sort_by(|a, b| a.1.total_cmp(&b.1));
    json!(lines)
}

/// The server child: serves the enhancement API on a free port, prints its URL, and
/// serves until killed.
fn server() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let state = ServerState::new(ServerConfig::default()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("http://{}", listener.local_addr().unwrap());
        serve_with_state(listener, state, std::future::pending())
            .await
            .unwrap();
    });
}

/// Starts the server child; returns it and its URL.
fn start_server() -> (std::process::Child, String) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(SERVER_ENV, "1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut url = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut url)
        .unwrap();
    (child, url.trim().to_owned())
}

/// Runs one pipeline child; returns its JSON line.
fn run_child(input: &Path, dir: &Path, provider: &str) -> Value {
    std::fs::create_dir_all(dir).unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .env(
            CHILD_ENV,
            format!("{}|{}|{provider}", input.display(), dir.display()),
        )
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pipeline child failed: {}",
        out.status
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().rev().find(|l| l.starts_with('{')).unwrap();
    serde_json::from_str(line).unwrap()
}

fn print_row(res: &str, secs: u32, provider: &str, ffmpeg_secs: f64, r: &Value) {
    let frames = r["frames"].as_f64().unwrap_or(1.0).max(1.0);
    let wall = r["wall_secs"].as_f64().unwrap_or(0.0);
    let own_ms = (r["cpu_secs"].as_f64().unwrap_or(0.0) * 1000.0
        - r["enhance_cpu_ms"].as_f64().unwrap_or(0.0))
        / frames;
    println!(
        "{res:>6} {secs:>5} s {provider:>6} | ffmpeg {ffmpeg_secs:>7.1} s | pipeline {wall:>7.1} s | ratio {:>5.2}x | own CPU {own_ms:>6.2} ms/frame (enhancement {:>5.2} ms/frame excluded) | peak RSS {:>5.0} MiB | peak disk {:>7.1} MiB",
        wall / ffmpeg_secs,
        r["enhance_cpu_ms"].as_f64().unwrap_or(0.0) / frames,
        r["peak_rss_mib"].as_f64().unwrap_or(0.0),
        r["peak_disk_mib"].as_f64().unwrap_or(0.0),
    );
    if std::env::var("IDEMPIPE_BENCH_TIMELINE").is_ok_and(|v| v == "1") {
        print_timeline(r);
    }
    if std::env::var("IDEMPIPE_BENCH_STAGES").is_ok_and(|v| v == "1")
        && let Some(stages) = r["stages"].as_object()
    {
        for (name, t) in stages {
            println!(
                "        {name:<10} items {:>6}  busy {:>8.1} s  wall {:>7.1} s",
                t["items"],
                t["busy_ms"].as_f64().unwrap_or(0.0) / 1000.0,
                t["wall_ms"].as_f64().unwrap_or(0.0) / 1000.0
            );
        }
    }
}

/// The items' attempts, then the cores the process tree kept busy per half second.
fn print_timeline(r: &Value) {
    for line in r["timeline"].as_array().into_iter().flatten() {
        let at = |i: usize| line[i].as_f64().unwrap_or(0.0);
        println!(
            "        {:<24} {:>7.2} s .. {:>7.2} s",
            line[0].as_str().unwrap_or(""),
            at(1),
            at(2)
        );
    }
    let samples = r["samples"].as_array().cloned().unwrap_or_default();
    let point = |s: &Value| (s[0].as_f64().unwrap_or(0.0), s[3].as_f64().unwrap_or(0.0));
    let mut cores = Vec::new();
    let mut from = samples.first().map(point);
    for s in &samples {
        let (t, cpu) = point(s);
        if let Some((t0, cpu0)) = from
            && t - t0 >= 0.49
        {
            cores.push(format!("{:.1}", (cpu - cpu0) / (t - t0)));
            from = Some((t, cpu));
        }
    }
    println!("        cores busy per 0.5 s: {}", cores.join(" "));
}

/// The long mode: one 720p local run of `secs`, with RSS and disk per tenth of the run.
fn long_run(dir: &Path, secs: u32) {
    let input = dir.join(format!("long-{secs}.mp4"));
    println!("generating a {secs} s 720p input ...");
    make_input(&input, size_of("720p"), secs, None);
    let r = run_child(&input, &dir.join("long"), "local");
    let frames = r["frames"].as_f64().unwrap_or(1.0);
    println!(
        "720p {secs} s local: {:.0} s, {:.1} frames/s, own CPU {:.2} ms/frame",
        r["wall_secs"].as_f64().unwrap_or(0.0),
        frames / r["wall_secs"].as_f64().unwrap_or(1.0),
        (r["cpu_secs"].as_f64().unwrap_or(0.0) * 1000.0
            - r["enhance_cpu_ms"].as_f64().unwrap_or(0.0))
            / frames
    );
    let samples = r["samples"].as_array().cloned().unwrap_or_default();
    let total = samples.len().max(1);
    for tenth in 0..10 {
        let part = &samples[tenth * total / 10..((tenth + 1) * total / 10).max(tenth * total / 10)];
        let max = |i: usize| {
            part.iter()
                .filter_map(|s| s[i].as_f64())
                .fold(0.0, f64::max)
        };
        println!(
            "  tenth {}: peak RSS {:>5.0} MiB, peak disk {:>7.1} MiB",
            tenth + 1,
            max(1),
            max(2)
        );
    }
}

fn main() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        return child(&spec);
    }
    if std::env::var(SERVER_ENV).is_ok() {
        return server();
    }
    let dir = std::env::temp_dir().join(format!("idempipe-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("{cores} cores; load average at start: {}", load.trim());
    if let Some(secs) = std::env::var("IDEMPIPE_BENCH_LONG")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        long_run(&dir, secs);
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    let gop = std::env::var("IDEMPIPE_BENCH_GOP")
        .ok()
        .and_then(|s| s.parse().ok());
    let providers = list("IDEMPIPE_BENCH_PROVIDERS", "local,http");
    let server = providers.iter().any(|p| p == "http").then(start_server);
    println!(
        "inputs: testsrc2 + tone, 30 fps, keyframe interval {}",
        gop.map_or("250 (ffmpeg's default)".to_owned(), |g: u32| g.to_string())
    );
    for res in list("IDEMPIPE_BENCH_RES", "240p,720p,1080p") {
        for secs in list("IDEMPIPE_BENCH_SECS", "10,30") {
            let secs: u32 = secs.parse().expect("IDEMPIPE_BENCH_SECS: whole seconds");
            let case = dir.join(format!("{res}-{secs}"));
            std::fs::create_dir_all(&case).unwrap();
            let input = case.join("in.mp4");
            make_input(&input, size_of(&res), secs, gop);
            let ffmpeg_secs = reference(&input, &case.join("ffmpeg.mp4"));
            for provider in &providers {
                let url = match provider.as_str() {
                    "http" => server.as_ref().map(|(_, url)| url.clone()).unwrap(),
                    other => other.to_owned(),
                };
                let r = run_child(&input, &case.join(provider), &url);
                print_row(&res, secs, provider, ffmpeg_secs, &r);
            }
            let _ = std::fs::remove_dir_all(&case);
        }
    }
    if let Some((mut child, _)) = server {
        let _ = child.kill();
        let _ = child.wait();
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average at end: {}", load.trim());
    let _ = std::fs::remove_dir_all(&dir);
}
