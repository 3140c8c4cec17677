//! `idempipe-chaos`: the chaos suite (run it with `scripts/chaos [--quick]`).
//!
//! Real runs of the real `idempipe` binary under faults: SIGKILLed workers and processes,
//! a PostgreSQL cluster of its own stopped hard or cut off, a misbehaving enhancement
//! server, a worker's clock jumping, a worker partitioned in a network namespace, a full
//! artifact disk. One table row per scenario and backend; exits 1 if any failed.
//!
//! # Layout
//! - `env`, `pg`, `api`, `proxy`, `netns`: the parts (binary, cluster, enhancement
//!   server, a TCP proxy that refuses connections, a network namespace).
//! - `watch`: a run's progress read from the database; `verify`: the clean run's output.
//! - `scenarios/`: one file per scenario; `report`: rows, verdicts and the table.

mod api;
mod env;
mod netns;
mod pg;
mod proxy;
mod report;
mod scenarios;
mod verify;
mod watch;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use env::{Env, run_checked};
use report::Row;
use scenarios::{Backend, Suite};

const USAGE: &str = "usage: idempipe-chaos [--quick] [--only NAME[,NAME...]] [--keep]";

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("IDEMPIPE_CHAOS_LOG")
                .unwrap_or_else(|_| "info,sqlx=error,idempipe_engine=error".into()),
        )
        .init();
    // reqwest is built without a default TLS provider; the enhance crate installs ring.
    idempipe_enhance::provider::tls::install_crypto_provider();
    // On SIGINT or SIGTERM the suite's future is dropped: children are killed, the
    // cluster stopped, the tmpfs unmounted and the namespace removed by their destructors.
    let outcome = tokio::select! {
        outcome = run() => outcome,
        () = interrupted() => Err(anyhow::anyhow!("interrupted")),
    };
    match outcome {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("chaos: {e:#}");
            std::process::exit(2);
        }
    }
}

/// Completes at SIGINT or SIGTERM.
async fn interrupted() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}

/// Options from the command line.
struct Options {
    quick: bool,
    only: Vec<String>,
    keep: bool,
}

fn options() -> anyhow::Result<Options> {
    let mut options = Options {
        quick: false,
        only: Vec::new(),
        keep: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => options.quick = true,
            "--keep" => options.keep = true,
            "--only" => {
                let names = args.next().context(USAGE)?;
                options.only = names.split(',').map(str::to_string).collect();
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}; {USAGE}"),
        }
    }
    Ok(options)
}

/// Runs the suite; true when every scenario passed.
async fn run() -> anyhow::Result<bool> {
    let options = options()?;
    let scenarios: Vec<_> = scenarios::all()
        .into_iter()
        .filter(|s| options.only.is_empty() || options.only.iter().any(|o| o == s.name))
        .collect();
    if scenarios.is_empty() {
        bail!("no scenario named {:?}", options.only);
    }
    let bin = std::env::var_os("IDEMPIPE_BIN")
        .map(PathBuf::from)
        .context("set IDEMPIPE_BIN to the idempipe binary under test (scripts/chaos does)")?;
    let media =
        std::env::var_os("IDEMPIPE_MEDIA").map_or_else(|| PathBuf::from("media"), PathBuf::from);
    let root = std::env::temp_dir().join(format!("idempipe-chaos-{}", std::process::id()));
    std::fs::create_dir_all(&root)?;
    let env = Env {
        bin,
        media,
        root: root.clone(),
        quick: options.quick,
    };
    let input = input(&env).await?;
    let pg = pg::Cluster::start_new(&root.join("pg"), env::free_port()?).await?;
    let reference = clean_run(&env, &input).await?;
    let suite = Suite {
        env,
        pg,
        input,
        reference,
    };
    tracing::info!(
        frames = suite.reference.frame_hashes.len(),
        dir = %root.display(),
        "clean run done; starting the scenarios"
    );

    let mut rows: Vec<Row> = Vec::new();
    for scenario in &scenarios {
        for &backend in scenario.backends {
            tracing::info!(
                scenario = scenario.name,
                backend = backend.label(),
                "starting"
            );
            let started = Instant::now();
            let row = match (scenario.run)(&suite, backend).await {
                Ok(row) => row,
                Err(e) => harness_failure(scenario.name, backend, &e),
            };
            tracing::info!(
                scenario = scenario.name,
                backend = backend.label(),
                secs = started.elapsed().as_secs(),
                "{}",
                report::line(&row)
            );
            rows.push(row);
        }
    }

    println!("{}", report::header());
    for row in &rows {
        println!("{}", report::line(row));
    }
    let passed = rows.iter().filter(|r| r.passed()).count();
    let failed = rows.len() - passed;
    println!(
        "chaos: {} scenarios, {passed} passed, {failed} failed",
        rows.len()
    );
    drop(suite);
    if failed == 0 && !options.keep {
        let _ = std::fs::remove_dir_all(&root);
    } else {
        eprintln!("chaos: logs kept in {}", root.display());
    }
    Ok(failed == 0)
}

/// The row of a scenario whose harness failed (a part would not start, ...).
fn harness_failure(name: &str, backend: Backend, e: &anyhow::Error) -> Row {
    Row {
        scenario: name.to_string(),
        backend: backend.label(),
        frames: 0,
        faults: "-".into(),
        outcome: "not run".into(),
        lost: 0,
        paid_twice: 0,
        same_key: 0,
        same_key_bound: 0,
        equal: false,
        recover: None,
        problems: vec![format!("harness error: {e:#}")],
    }
}

/// The input video: the 250-frame `bikes.mp4` sample, or for `--quick` its first 4 s at
/// half size with a keyframe every second (100 frames in 4 segments).
async fn input(env: &Env) -> anyhow::Result<PathBuf> {
    let sample = env.media.join("bikes.mp4");
    anyhow::ensure!(sample.is_file(), "no sample video at {}", sample.display());
    if !env.quick {
        return Ok(sample);
    }
    let cut = env.root.join("input.mp4");
    let (src, dst) = (path_str(&sample)?, path_str(&cut)?);
    run_checked(
        "ffmpeg",
        &[
            "-v",
            "error",
            "-y",
            "-i",
            src,
            "-t",
            "4",
            "-vf",
            "scale=320:136",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-g",
            "25",
            "-keyint_min",
            "25",
            "-sc_threshold",
            "0",
            "-an",
            dst,
        ],
    )
    .await?;
    Ok(cut)
}

/// A fault-free run on SQLite through a fault-free server: the reference output. Every
/// frame must be enhanced exactly once there, or the counting itself is wrong.
async fn clean_run(env: &Env, input: &Path) -> anyhow::Result<verify::Reference> {
    let dir = env.scenario_dir("clean")?;
    let log = dir.join("api.log");
    let port = env::free_port()?;
    let api = api::Api::start(env, &format!("127.0.0.1:{port}"), "127.0.0.1", &[], &log).await?;
    let output = dir.join("out.mp4");
    let mut args = vec!["process".to_string()];
    args.extend(scenarios::settings(
        input,
        &output,
        &dir.join("artifacts"),
        &api.url,
    ));
    args.extend(["--db".into(), path_str(&dir.join("state.db"))?.into()]);
    let started = Instant::now();
    let mut process = env.spawn(&args, &dir.join("process.log"))?;
    let status = tokio::time::timeout(Duration::from_secs(600), process.wait()).await??;
    anyhow::ensure!(
        status.success(),
        "the clean run failed ({status}); see {}",
        dir.display()
    );
    let billing = api.billing().await?;
    api.stop().await;
    let reference = verify::Reference::of(&output).await?;
    let frames = reference.frame_hashes.len() as u64;
    anyhow::ensure!(
        billing.enhanced == frames && billing.same_key_repeats == 0 && billing.paid_twice == 0,
        "the clean run's server counted {billing:?} for {frames} frames"
    );
    tracing::info!(frames, secs = started.elapsed().as_secs_f64(), "clean run");
    Ok(reference)
}

fn path_str(path: &Path) -> anyhow::Result<&str> {
    path.to_str()
        .with_context(|| format!("{} is not UTF-8", path.display()))
}
