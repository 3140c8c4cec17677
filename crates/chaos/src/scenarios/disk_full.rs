//! The artifact disk fills up mid-run (a small tmpfs, topped up by a filler file): the
//! run must pause or fail with an error naming the cause, lose nothing completed, and
//! finish once the space is freed (a rerun, after `retry` if the run failed).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::env::{run_checked, sigkill};
use crate::report::Row;

use super::pg_restart::wait_progress;
use super::{Backend, CONCURRENCY, Case, RUN_TIMEOUT, Suite};

/// Size of the artifact disk: room for the run until the filler takes it.
const DISK: &str = "96m";
/// Space left free by the filler: less than one segment's frames.
const LEFT_FREE: u64 = 256 * 1024;
/// How long the disk stays full.
const FULL_FOR: Duration = Duration::from_secs(10);
/// What a clear error says.
const ENOSPC: &str = "No space left on device";

/// Runs the scenario on `backend`.
pub(crate) async fn run(suite: &Suite, backend: Backend) -> anyhow::Result<Row> {
    let case = Case::new(suite, "disk-full", backend, &["--latency-ms", "20"]).await?;
    let disk = Tmpfs::mount(&case.artifacts).await?;
    let log = case.dir.join("process.log");
    let mut process = case.suite.env.spawn(&case.process_args(&case.db), &log)?;
    let watch = crate::watch::Watch::attach(&case.db, Duration::from_secs(30)).await?;
    let frames = suite.reference.frame_hashes.len() as i64;
    let mut first = "the run ended before the disk filled".to_string();
    let mut freed = None;
    let mut errors = Vec::new();
    if wait_progress(&watch, frames / 5).await {
        let filler = case.artifacts.join("filler");
        disk.fill(&filler).await?;
        let full_until = Instant::now() + FULL_FOR;
        while Instant::now() < full_until {
            errors.extend(watch.errors().await.unwrap_or_default());
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        first = match process.try_wait()? {
            Some(exit) => format!("process exited {}", exit.code().unwrap_or(-1)),
            None => "process kept waiting".into(),
        };
        std::fs::remove_file(&filler)?;
        freed = Some(Instant::now());
    }
    let rerun = process.try_wait()?.is_some();
    if rerun {
        let run_id = watch.run_id.to_string();
        let _ = run_checked(
            &suite.env.bin.to_string_lossy(),
            &["retry", &run_id, "--db", &case.db],
        )
        .await;
        process = case.suite.env.spawn(&case.process_args(&case.db), &log)?;
    }
    let status = watch.wait_end(RUN_TIMEOUT).await;
    let ended = Instant::now();
    if tokio::time::timeout(Duration::from_secs(10), process.wait())
        .await
        .is_err()
    {
        sigkill(&mut process).await;
    }
    drop(disk);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let clear = text.contains(ENOSPC) || errors.iter().any(|e| e.contains(ENOSPC));
    let recover = freed.and_then(|f| watch.recovery(f, Some(ended)));
    let faults = format!(
        "disk full {} s: {first}{}",
        FULL_FOR.as_secs(),
        if rerun { ", rerun" } else { "" }
    );
    let mut row = case
        .finish(
            Some(&watch),
            status,
            faults,
            recover,
            frames.max(0) as u64 + CONCURRENCY,
        )
        .await?;
    if freed.is_some() && !clear {
        row.problems
            .push(format!("no error said {ENOSPC:?} while the disk was full"));
    }
    Ok(row)
}

/// A tmpfs mounted over a directory; unmounted when dropped.
struct Tmpfs {
    dir: std::path::PathBuf,
}

impl Tmpfs {
    async fn mount(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.to_str().context("artifact path is not UTF-8")?;
        run_checked(
            "mount",
            &["-t", "tmpfs", "-o", &format!("size={DISK}"), "tmpfs", path],
        )
        .await
        .context("cannot mount a tmpfs (needs root)")?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    /// Fills the disk but for [`LEFT_FREE`] bytes with `filler`.
    async fn fill(&self, filler: &Path) -> anyhow::Result<()> {
        let path = self.dir.to_str().context("artifact path is not UTF-8")?;
        let avail: u64 = run_checked("df", &["--output=avail", "-B1", path])
            .await?
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .context("cannot read the free space from df")?;
        let size = avail.saturating_sub(LEFT_FREE).to_string();
        let filler = filler.to_str().context("filler path is not UTF-8")?;
        run_checked("fallocate", &["-l", &size, filler])
            .await
            .map(drop)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .args(["-l"])
            .arg(&self.dir)
            .output();
    }
}
