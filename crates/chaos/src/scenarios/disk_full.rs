//! The artifact disk fills up mid-run (a small tmpfs, kept full by a filler file): the
//! run must pause or fail with an error naming the cause, lose nothing completed, and
//! finish once the space is freed (a rerun, after `retry` if the run failed).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::env::{run_checked, sigkill};
use crate::report::Row;

use super::pg_restart::wait_progress;
use super::{Backend, CONCURRENCY, Case, RUN_TIMEOUT, Suite};

/// Size of the artifact disk: room for the frames of the segments in flight until the
/// filler takes it (quick profile, full profile).
const DISK: [&str; 2] = ["64m", "256m"];
/// How long the disk stays full.
const FULL_FOR: Duration = Duration::from_secs(10);
/// errno of a full disk.
const ENOSPC_ERRNO: i32 = 28;
/// What a clear error says.
const ENOSPC: &str = "No space left on device";

/// Runs the scenario on `backend`.
pub(crate) async fn run(suite: &Suite, backend: Backend) -> anyhow::Result<Row> {
    let case = Case::new(suite, "disk-full", backend, &["--latency-ms", "20"]).await?;
    let disk = Tmpfs::mount(&case.artifacts, suite.env.quick).await?;
    let log = case.dir.join("process.log");
    let mut process = case.suite.env.spawn(&case.process_args(&case.db), &log)?;
    let watch = crate::watch::Watch::attach(&case.db, Duration::from_secs(30)).await?;
    let mut first = "the run ended before the disk filled".to_string();
    let mut freed = None;
    let mut errors = Vec::new();
    // Full as soon as frames flow: segments are still being extracted and enhanced.
    if wait_progress(&watch, 1).await {
        let filler = case.artifacts.join("filler");
        let mut file = std::fs::File::create(&filler)?;
        let full_until = Instant::now() + FULL_FOR;
        while Instant::now() < full_until {
            // Space the run frees (a segment's frames deleted) is taken again at once.
            fill(&mut file)?;
            errors.extend(watch.errors().await.unwrap_or_default());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        drop(file);
        first = match process.try_wait()? {
            Some(exit) => format!("process exited {}", exit.code().unwrap_or(-1)),
            None => "process kept waiting".into(),
        };
        std::fs::remove_file(&filler)?;
        freed = Some(Instant::now());
    }
    let rerun = process.try_wait()?.is_some_and(|exit| !exit.success());
    if rerun {
        case.retry(watch.run_id).await?;
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
            // A frame whose write waited out the full disk keeps its paid answer: a
            // call is repeated only if a wait outlasted its patience (60 s, far beyond
            // the 10 s here), at most once per frame in flight.
            CONCURRENCY,
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
    async fn mount(dir: &Path, quick: bool) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.to_str().context("artifact path is not UTF-8")?;
        let size = DISK[usize::from(!quick)];
        run_checked(
            "mount",
            &["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs", path],
        )
        .await
        .context("cannot mount a tmpfs (needs root)")?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
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

/// Appends to `file` until the disk is full.
fn fill(file: &mut std::fs::File) -> anyhow::Result<()> {
    use std::io::Write;
    let chunk = vec![0u8; 64 * 1024];
    loop {
        match file.write(&chunk) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(ENOSPC_ERRNO) => return Ok(()),
            Err(e) => return Err(e).context("cannot write the filler"),
        }
    }
}
