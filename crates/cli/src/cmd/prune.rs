//! `idempipe prune`: delete finished runs with their artifacts (`--older-than`), the
//! frame files of failed and cancelled runs (`--keep-failed`), and run directories no
//! database knows (`--orphans`); prints the bytes freed. Artifact directories may be
//! local or in S3-compatible object storage (`s3://bucket/prefix`, with the endpoint and
//! credentials in the AWS environment): both are measured and removed the same way.

use std::collections::HashSet;
use std::path::PathBuf;

use anyhow::Context;
use idempipe_engine::{Clock, Run, RunStatus, SystemClock};
use idempipe_video::pipeline::disk;
use idempipe_video::storage::{Scratch, Storage};
use serde_json::json;

use crate::db::{DbArgs, redact};
use crate::output::{JsonArg, bytes, print_json};

/// Milliseconds in a day.
const DAY_MS: i64 = 86_400_000;

/// Delete finished runs and free the disk their artifacts use. Running runs are never
/// touched.
#[derive(clap::Args, Debug)]
pub(crate) struct PruneArgs {
    /// Delete runs that finished more than this many days ago (fractions allowed, e.g.
    /// 0.5), with their items, attempts and artifact directories.
    #[arg(long, value_name = "DAYS")]
    older_than: Option<f64>,
    /// Delete the frame files (raw RGB, the bulk of a run's artifacts) of failed and
    /// cancelled runs that finished longer ago than this: 0, 90s, 30m, 12h or 7d. The
    /// runs stay; `retry` then cannot reuse those frames. Default: frames stay until the
    /// run is pruned.
    #[arg(long, value_name = "DURATION")]
    keep_failed: Option<String>,
    /// Remove orphaned run directories under --artifacts (a directory or an s3://
    /// prefix): `run-<uid>` directories with a run.json marker whose run is in none of
    /// the databases given (--db, --also-db). Nothing else there is touched.
    #[arg(long)]
    orphans: bool,
    /// The artifact root --orphans searches, a directory or s3://BUCKET/PREFIX
    /// [default: artifacts/ in the state directory, as for process]
    #[arg(long, value_name = "DIR")]
    artifacts: Option<PathBuf>,
    /// Another database whose runs keep their directories in the same artifact root
    /// (repeatable): its runs' directories are not orphans.
    #[arg(long, value_name = "URL")]
    also_db: Vec<String>,
    #[command(flatten)]
    db: DbArgs,
    #[command(flatten)]
    out: JsonArg,
}

/// What one prune did.
#[derive(Default)]
struct Freed {
    /// Directories (or frame directories) removed.
    removed: Vec<PathBuf>,
    /// Bytes they held.
    bytes: u64,
}

impl Freed {
    /// Removes `dir`, a local directory or an `s3://` prefix, counting what it held.
    async fn remove(&mut self, storage: &Storage, dir: PathBuf) -> anyhow::Result<()> {
        let removed = disk::remove_tree(storage, &dir)
            .await
            .with_context(|| format!("cannot remove {}", dir.display()))?;
        if let Some(n) = removed {
            self.bytes += n;
            self.removed.push(dir);
        }
        Ok(())
    }
}

/// Prunes.
pub(crate) async fn run(args: PruneArgs) -> anyhow::Result<i32> {
    anyhow::ensure!(
        args.older_than.is_some() || args.keep_failed.is_some() || args.orphans,
        "say what to prune: --older-than DAYS, --keep-failed DURATION and/or --orphans"
    );
    let keep_failed_ms = args
        .keep_failed
        .as_deref()
        .map(parse_duration)
        .transpose()?;
    let store = args.db.open().await?;
    // Artifact directories may be local or in object storage (AWS_* environment);
    // removing and measuring them needs no scratch space.
    let storage = Storage::new(Scratch::unchecked(std::env::temp_dir()));
    let now = SystemClock.now();
    let mut pruned = 0;
    let (mut runs_freed, mut frames_freed, mut orphans_freed) =
        (Freed::default(), Freed::default(), Freed::default());
    if let Some(days) = args.older_than {
        anyhow::ensure!(
            days.is_finite() && days >= 0.0,
            "--older-than must be a number of days >= 0, got {days}"
        );
        let before = now - (days * DAY_MS as f64) as i64;
        let candidates: Vec<PathBuf> = all_runs(&store)
            .await?
            .iter()
            .filter(|r| r.finished_at.is_some_and(|f| f < before))
            .filter_map(|r| disk::run_dir_of_params(&r.params))
            .collect();
        pruned = store.history_prune(before).await?;
        // Only directories whose run is really gone now (a run finishing in between
        // keeps its row, and its directory).
        let live = live_dirs(&store).await?;
        for dir in candidates.into_iter().filter(|d| !live.contains(d)) {
            runs_freed.remove(&storage, dir).await?;
        }
    }
    if let Some(keep) = keep_failed_ms {
        for run in all_runs(&store).await? {
            let gave_up = matches!(run.status, RunStatus::Failed | RunStatus::Cancelled);
            if gave_up
                && run.finished_at.is_some_and(|f| f <= now - keep)
                && let Some(dir) = disk::run_dir_of_params(&run.params)
            {
                frames_freed.remove(&storage, dir.join("frames")).await?;
            }
        }
    }
    if args.orphans {
        let root = args
            .artifacts
            .clone()
            .unwrap_or_else(|| super::process::state_dir().join("artifacts"));
        // Directories first: a marker is written only after its run's row committed, so
        // every directory listed here has its run in the databases read next.
        let dirs = disk::list_run_dirs_in(&storage, &root)
            .await
            .with_context(|| format!("cannot list {}", root.display()))?;
        let mut uids = run_uids(&all_runs(&store).await?);
        for url in &args.also_db {
            let other = idempipe_engine::connect(url)
                .await
                .with_context(|| format!("cannot open the database {}", redact(url)))?;
            uids.extend(run_uids(&all_runs(&other).await?));
        }
        for (dir, marker) in dirs {
            if !uids.contains(&marker.uid) {
                orphans_freed.remove(&storage, dir).await?;
            }
        }
    }
    let total = runs_freed.bytes + frames_freed.bytes + orphans_freed.bytes;
    if args.out.json {
        print_json(&json!({
            "pruned_runs": pruned,
            "removed_run_dirs": runs_freed.removed,
            "removed_frame_dirs": frames_freed.removed,
            "removed_orphans": orphans_freed.removed,
            "bytes_freed": total,
        }))?;
        return Ok(0);
    }
    if let Some(days) = args.older_than {
        println!(
            "deleted {pruned} finished run(s) older than {days} day(s), with their items and attempts, and {} artifact director(ies): {}",
            runs_freed.removed.len(),
            bytes(runs_freed.bytes)
        );
    }
    if let Some(keep) = &args.keep_failed {
        println!(
            "deleted the frames of {} failed or cancelled run(s) finished more than {keep} ago: {}",
            frames_freed.removed.len(),
            bytes(frames_freed.bytes)
        );
    }
    if args.orphans {
        println!(
            "removed {} orphaned run director(ies): {}",
            orphans_freed.removed.len(),
            bytes(orphans_freed.bytes)
        );
    }
    println!("freed {} ({total} bytes)", bytes(total));
    Ok(0)
}

/// Every run of `store`.
async fn all_runs(store: &idempipe_engine::SharedStore) -> anyhow::Result<Vec<Run>> {
    Ok(store.run_list(i64::MAX).await?)
}

/// The uids of `runs` (video runs made before uids existed have none).
fn run_uids(runs: &[Run]) -> HashSet<String> {
    runs.iter()
        .filter_map(|r| r.params.get("uid")?.as_str().map(str::to_owned))
        .collect()
}

/// The artifact directories of the runs still in `store`.
async fn live_dirs(store: &idempipe_engine::SharedStore) -> anyhow::Result<HashSet<PathBuf>> {
    Ok(all_runs(store)
        .await?
        .iter()
        .filter_map(|r| disk::run_dir_of_params(&r.params))
        .collect())
}

/// `0`, `90s`, `30m`, `12h`, `7d` (fractions allowed) in milliseconds.
fn parse_duration(text: &str) -> anyhow::Result<i64> {
    let t = text.trim();
    let (number, unit_ms) = match t.char_indices().last() {
        Some((i, 's')) => (&t[..i], 1_000.0),
        Some((i, 'm')) => (&t[..i], 60_000.0),
        Some((i, 'h')) => (&t[..i], 3_600_000.0),
        Some((i, 'd')) => (&t[..i], DAY_MS as f64),
        _ if t == "0" => ("0", 1.0),
        _ => {
            anyhow::bail!("--keep-failed {text:?}: give a duration such as 0, 90s, 30m, 12h or 7d")
        }
    };
    let value: f64 = number
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite() && *v >= 0.0)
        .with_context(|| format!("--keep-failed {text:?}: {number:?} is not a number >= 0"))?;
    Ok((value * unit_ms) as i64)
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("0").unwrap(), 0);
        assert_eq!(parse_duration("90s").unwrap(), 90_000);
        assert_eq!(parse_duration("1.5h").unwrap(), 5_400_000);
        assert_eq!(parse_duration("7d").unwrap(), 604_800_000);
        assert!(parse_duration("7").is_err());
        assert!(parse_duration("-1d").is_err());
    }
}
