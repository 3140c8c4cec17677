//! `idempipe runs`: recent runs with status, progress, start/end, artifact size and input.

use idempipe_engine::StageCount;
use serde::Serialize;

use crate::db::DbArgs;
use crate::output::{JsonArg, bytes, print_json, time};
use idempipe_video::pipeline::disk;

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
    items_total: i64,
    items_completed: i64,
    /// Bytes in the run's artifact directory (0 when it is gone; null for runs whose
    /// directory is not known).
    artifacts_bytes: Option<u64>,
}

/// Prints the runs.
pub(crate) async fn run(args: RunsArgs) -> anyhow::Result<i32> {
    let store = args.db.open().await?;
    let mut lines = Vec::new();
    for run in store.run_list(args.limit).await? {
        let counts = store.item_counts(run.id).await?;
        let total = counts.iter().map(|c| c.count).sum();
        let completed = counts
            .iter()
            .filter(|c| c.status == "completed")
            .map(|c: &StageCount| c.count)
            .sum();
        let artifacts_bytes = disk::run_dir_of_params(&run.params).map(|d| disk::dir_size(&d));
        lines.push(RunLine {
            artifacts_bytes,
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
        "{:>5}  {:<10} {:>15}  {:<19}  {:<19}  {:>10}  input",
        "run", "status", "items done", "started", "finished", "artifacts"
    );
    for l in &lines {
        let status = if l.run.paused {
            "paused".to_string()
        } else {
            l.run.status.as_str().to_string()
        };
        println!(
            "{:>5}  {:<10} {:>15}  {:<19}  {:<19}  {:>10}  {}",
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
    }
    Ok(0)
}
