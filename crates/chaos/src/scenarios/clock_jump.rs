//! A worker's wall clock jumps (libfaketime, the monotonic clock untouched): +1 h, then to
//! 1 h behind. It leads maintenance (it starts first), so if leases were reckoned by its
//! clock it would rescue the other worker's live leases, or hand out leases that expire
//! at once. Leases must follow the database's clock.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::process::Command;

use crate::env::{sigterm, spawn_logged};
use crate::report::Row;

use super::pg_restart::wait_progress;
use super::{Backend, CONCURRENCY, Case, RUN_TIMEOUT, Suite, rescued_leases};

/// The jumps: (fraction of frames done when it happens, the clock's offset after it).
const JUMPS: [(f64, &str); 2] = [(0.2, "+3600"), (0.5, "-3600")];

/// Runs the scenario on `backend` (PostgreSQL only: a SQLite file has no clock of its
/// own, its workers share one machine's).
pub(crate) async fn run(suite: &Suite, backend: Backend) -> anyhow::Result<Row> {
    let library = libfaketime()?;
    let case = Case::new(suite, "clock-jump", backend, &["--latency-ms", "20"]).await?;
    let offset_file = case.dir.join("offset");
    std::fs::write(&offset_file, "+0\n")?;
    let watch = case.submit().await?;
    let mut jumpy = spawn_logged(
        faked(&suite.env.bin, &library, &offset_file),
        &case.worker_args(&case.db, "jumpy"),
        &case.dir.join("jumpy.log"),
    )?;
    // Started second: the jumpy worker already leads maintenance.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut steady = suite.env.spawn(
        &case.worker_args(&case.db, "steady"),
        &case.dir.join("steady.log"),
    )?;
    let frames = suite.reference.frame_hashes.len() as i64;
    let mut jumps = Vec::new();
    let mut last_jump = Instant::now();
    for (fraction, offset) in JUMPS {
        if !wait_progress(&watch, (frames as f64 * fraction) as i64).await {
            break;
        }
        std::fs::write(&offset_file, format!("{offset}\n"))?;
        jumps.push(format!("{offset} s"));
        last_jump = Instant::now();
    }
    let status = watch.wait_end(RUN_TIMEOUT).await;
    let ended = Instant::now();
    sigterm(&mut jumpy, Duration::from_secs(10)).await;
    sigterm(&mut steady, Duration::from_secs(10)).await;
    let recover = watch.recovery(last_jump, Some(ended));
    let log = |name: &str| std::fs::read_to_string(case.dir.join(name)).unwrap_or_default();
    // Nobody dies here: a lease that expired was taken from a live worker.
    let stolen = rescued_leases(&log("jumpy.log")) + rescued_leases(&log("steady.log"));
    let faults = format!(
        "{} clock jumps ({}), {stolen} live lease(s) rescued",
        jumps.len(),
        jumps.join(", ")
    );
    // A lease taken from a live worker costs a repeated call per item it held.
    let bound = jumps.len() as u64 * CONCURRENCY;
    let mut row = case
        .finish(Some(&watch), status, faults, recover, bound)
        .await?;
    if stolen > 0 {
        row.problems.push(format!(
            "{stolen} lease(s) of live workers rescued: leases follow a worker's clock"
        ));
    }
    Ok(row)
}

/// `idempipe` under libfaketime: the wall clock offset by the file's contents (re-read
/// every second), the monotonic clock real.
fn faked(bin: &Path, library: &Path, offset_file: &Path) -> Command {
    let mut command = Command::new(bin);
    command
        .env("LD_PRELOAD", library)
        .env("FAKETIME_TIMESTAMP_FILE", offset_file)
        .env("FAKETIME_CACHE_DURATION", "1")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    command
}

/// The multi-threaded libfaketime (Debian package `faketime`, installed by scripts/setup).
fn libfaketime() -> anyhow::Result<PathBuf> {
    std::fs::read_dir("/usr/lib")?
        .filter_map(Result::ok)
        .map(|e| e.path().join("faketime/libfaketimeMT.so.1"))
        .find(|p| p.is_file())
        .context("libfaketime not found (apt-get install faketime; scripts/setup does it)")
}
