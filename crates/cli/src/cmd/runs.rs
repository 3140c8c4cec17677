//! `idempipe runs`: recent runs with status, progress, start/end, artifact size (local
//! or object storage) and input.
//! A running run shows its activity instead: `running` (served), `interrupted` or `queued`
//! (nobody serves it).

use idempipe_engine::{Clock, RunActivity, StageCount, SystemClock};
use serde::Serialize;

use crate::db::DbArgs;
use crate::output::{JsonArg, bytes, print_json, time};
use idempipe_video::pipeline::disk;
use idempipe_video::storage::{Scratch, Storage};

/// List recent runs.
#[derive(clap::Args, Debug)]
pub(crate) struct RunsArgs {
    #[command(flatten)]
    db: DbArgs,
    #[command(flatten)]
    out: JsonArg,
    /// How many runs to show, newest first.
    #[arg(long, default_value_t = 20)]
    limit: i64,
}

#[derive(Serialize)]
struct RunLine {
    #[serde(flatten)]
    run: idempipe_engine::Run,
    /// For running runs: running, interrupted (nobody serves it) or queued.
    activity: Option<RunActivity>,
    items_total: i64,
    items_completed: i64,
    /// Bytes in the run's artifact directory, local or in object storage (0 when it is
    /// gone; null for runs whose directory is not known or cannot be read now).
    artifacts_bytes: Option<u64>,
}

/// Prints the runs.
pub(crate) async fn run(args: RunsArgs) -> anyhow::Result<i32> {
    let store = args.db.open().await?;
    // Artifact directories may be local or in object storage (AWS_* environment).
    let storage = Storage::new(Scratch::unchecked(std::env::temp_dir()));
    let mut lines = Vec::new();
    let runs = store.run_list(args.limit).await?;
    let ids: Vec<i64> = runs.iter().map(|r| r.id).collect();
    let activity: std::collections::HashMap<i64, RunActivity> = store
        .run_activity(&ids, SystemClock.now())
        .await?
        .into_iter()
        .collect();
    for run in runs {
        let counts = store.item_counts(run.id).await?;
        let total = counts.iter().map(|c| c.count).sum();
        let completed = counts
            .iter()
            .filter(|c| c.status == "completed")
            .map(|c: &StageCount| c.count)
            .sum();
        let artifacts_bytes = match disk::run_dir_of_params(&run.params) {
            Some(dir) => match storage.tree_size(&dir).await {
                Ok(n) => Some(n),
                Err(e) => {
                    tracing::warn!(run = run.id, error = %e, "cannot measure the run's artifacts");
                    None
                }
            },
            None => None,
        };
        lines.push(RunLine {
            artifacts_bytes,
            activity: activity.get(&run.id).copied(),
            run,
            items_total: total,
            items_completed: completed,
        });
    }
    if args.out.json {
        print_json(&lines)?;
        return Ok(0);
    }
    println!(
        "{:>5}  {:<11} {:>15}  {:<19}  {:<19}  {:>10}  input",
        "run", "status", "items done", "started", "finished", "artifacts"
    );
    for l in &lines {
        let status = match (l.run.paused, l.activity) {
            (true, _) => "paused",
            (false, Some(activity)) => activity.as_str(),
            (false, None) => l.run.status.as_str(),
        };
        println!(
            "{:>5}  {:<11} {:>15}  {:<19}  {:<19}  {:>10}  {}",
            l.run.id,
            status,
            format!("{}/{}", l.items_completed, l.items_total),
            time(l.run.created_at),
            l.run.finished_at.map(time).unwrap_or_else(|| "-".into()),
            l.artifacts_bytes.map(bytes).unwrap_or_else(|| "-".into()),
            l.run.input
        );
    }
    if lines.is_empty() {
        println!("no runs in {}", crate::db::redact(&args.db.url()));
    } else if lines
        .iter()
        .any(|l| l.activity == Some(RunActivity::Interrupted))
    {
        println!(
            "\ninterrupted: no worker serves the run; rerun its `idempipe process` command or start `idempipe worker`"
        );
    }
    Ok(0)
}
