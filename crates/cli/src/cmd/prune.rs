//! `idempipe prune --older-than DAYS`: delete finished runs (with their items and attempts).

use idempipe_engine::{Clock, SystemClock};
use serde_json::json;

use crate::db::DbArgs;
use crate::output::{JsonArg, print_json};

/// Milliseconds in a day.
const DAY_MS: i64 = 86_400_000;

/// Delete runs that finished more than the given number of days ago. Running runs are
/// never touched.
#[derive(clap::Args, Debug)]
pub(crate) struct PruneArgs {
    /// Age in days of the finished runs to delete (fractions allowed, e.g. 0.5).
    #[arg(long, value_name = "DAYS")]
    older_than: f64,
    #[command(flatten)]
    db: DbArgs,
    #[command(flatten)]
    out: JsonArg,
}

/// Prunes.
pub(crate) async fn run(args: PruneArgs) -> anyhow::Result<i32> {
    anyhow::ensure!(
        args.older_than.is_finite() && args.older_than >= 0.0,
        "--older-than must be a number of days >= 0, got {}",
        args.older_than
    );
    let store = args.db.open().await?;
    let before = SystemClock.now() - (args.older_than * DAY_MS as f64) as i64;
    let n = store.history_prune(before).await?;
    if args.out.json {
        print_json(&json!({ "pruned_runs": n }))?;
    } else {
        println!(
            "deleted {n} finished run(s) older than {} day(s), with their items and attempts",
            args.older_than
        );
    }
    Ok(0)
}
