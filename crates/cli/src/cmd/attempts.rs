//! `idempipe attempts RUN ITEM`: the attempt history of one item.

use serde::Serialize;

use crate::db::DbArgs;
use crate::output::{JsonArg, error_text, print_json, time};

/// Show the attempt history of one item.
#[derive(clap::Args, Debug)]
pub(crate) struct AttemptsArgs {
    /// Run id.
    run: i64,
    /// Item key, e.g. frame/000123 (the stage is found from the key when unique).
    item: String,
    /// Stage of the item, when the key alone is ambiguous.
    #[arg(long)]
    stage: Option<String>,
    #[command(flatten)]
    db: DbArgs,
    #[command(flatten)]
    out: JsonArg,
}

#[derive(Serialize)]
struct History {
    item: idempipe_engine::Item,
    attempts: Vec<idempipe_engine::Attempt>,
}

/// Prints the history.
pub(crate) async fn run(args: AttemptsArgs) -> anyhow::Result<i32> {
    let store = args.db.open().await?;
    let stage = match args.stage.clone() {
        Some(s) => s,
        None => {
            let stages: Vec<String> = store
                .item_counts(args.run)
                .await?
                .into_iter()
                .map(|c| c.stage)
                .collect();
            let mut found = Vec::new();
            for s in stages.iter().collect::<std::collections::BTreeSet<_>>() {
                if store.item_get(args.run, s, &args.item).await.is_ok() {
                    found.push(s.clone());
                }
            }
            match found.len() {
                1 => found.remove(0),
                0 => anyhow::bail!("run {} has no item with key {:?}", args.run, args.item),
                _ => anyhow::bail!(
                    "key {:?} exists in stages {found:?}; pass --stage",
                    args.item
                ),
            }
        }
    };
    let item = store.item_get(args.run, &stage, &args.item).await?;
    let attempts = store.attempt_list(item.id).await?;
    let history = History { item, attempts };
    if args.out.json {
        print_json(&history)?;
        return Ok(0);
    }
    let i = &history.item;
    println!(
        "{} {} in run {}: {} after {} attempt(s)",
        i.stage,
        i.key,
        i.run_id,
        i.status.as_str(),
        i.attempts
    );
    for a in &history.attempts {
        let called = if a.external_call_at.is_some() {
            " called out"
        } else {
            ""
        };
        println!(
            "  #{:<3} {:<9} {} +{}ms  {}{}",
            a.attempt,
            a.outcome,
            time(a.started_at),
            a.ended_at - a.started_at,
            a.worker.as_deref().unwrap_or("-"),
            called
        );
        if let Some(e) = &a.error {
            println!("        {}", error_text(e));
        }
    }
    if i.status == idempipe_engine::ItemStatus::Running {
        println!(
            "  (attempt {} running on {})",
            i.attempts,
            i.worker.as_deref().unwrap_or("?")
        );
    }
    Ok(0)
}
