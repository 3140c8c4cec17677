//! `idempipe failures RUN`: each failed, dead or unknown item with its last error.

use idempipe_engine::store::ItemFilter;
use idempipe_engine::{Item, ItemStatus};
use serde::Serialize;

use crate::db::DbArgs;
use crate::output::{JsonArg, error_text, print_json, time};

/// List the failed, dead and unknown items of a run.
#[derive(clap::Args, Debug)]
pub(crate) struct FailuresArgs {
    /// Run id.
    run: i64,
    /// Only this stage (e.g. frame).
    #[arg(long)]
    stage: Option<String>,
    #[command(flatten)]
    db: DbArgs,
    #[command(flatten)]
    out: JsonArg,
}

#[derive(Serialize)]
struct Failure {
    #[serde(flatten)]
    item: Item,
    /// When a failed item is due again (dead and unknown items wait for a person).
    due_again_at: Option<i64>,
}

/// Prints the failures.
pub(crate) async fn run(args: FailuresArgs) -> anyhow::Result<i32> {
    let store = args.db.open().await?;
    store.run_get(args.run).await?;
    let items = store
        .item_list(&ItemFilter {
            run_id: args.run,
            stage: args.stage.clone(),
            statuses: vec![ItemStatus::Failed, ItemStatus::Dead, ItemStatus::Unknown],
            ..Default::default()
        })
        .await?;
    let failures: Vec<Failure> = items
        .into_iter()
        .map(|item| Failure {
            due_again_at: (item.status == ItemStatus::Failed).then_some(item.next_attempt_at),
            item,
        })
        .collect();
    if args.out.json {
        print_json(&failures)?;
        return Ok(0);
    }
    if failures.is_empty() {
        println!("run {}: no failed, dead or unknown items", args.run);
        return Ok(0);
    }
    for f in &failures {
        let i = &f.item;
        let due = match f.due_again_at {
            Some(t) => format!("due again {}", time(t)),
            None => "waits for `idempipe retry`".into(),
        };
        let error = i.last_error.as_ref().map(error_text).unwrap_or_default();
        println!(
            "{:<8} {:<24} {:<8} attempts {:<3} {}\n         {}",
            i.stage,
            i.key,
            i.status.as_str(),
            i.attempts,
            due,
            error
        );
    }
    println!(
        "{} item(s). `idempipe attempts {} KEY` shows one item's history.",
        failures.len(),
        args.run
    );
    Ok(0)
}
