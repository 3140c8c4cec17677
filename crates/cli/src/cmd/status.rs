//! `idempipe status RUN`: per stage counts, rate and ETA, failures grouped by kind.

use std::collections::BTreeMap;

use idempipe_engine::store::{ItemFilter, Throughput};
use idempipe_engine::{Clock, ItemStatus, RunActivity, SystemClock};
use serde::Serialize;
use serde_json::Value;

use crate::db::DbArgs;
use crate::output::{JsonArg, duration, error_text, print_json};

/// Window over which rate and ETA are measured.
const RATE_WINDOW_MS: i64 = 60_000;

/// Show the state of one run.
#[derive(clap::Args, Debug)]
pub(crate) struct StatusArgs {
    /// Run id.
    run: i64,
    #[command(flatten)]
    db: DbArgs,
    #[command(flatten)]
    out: JsonArg,
}

/// One stage's counts, rate and ETA.
#[derive(Serialize, Default)]
pub(crate) struct StageStatus {
    stage: String,
    counts: BTreeMap<String, i64>,
    rate_per_second: f64,
    eta_seconds: Option<f64>,
}

/// Failures of one kind.
#[derive(Serialize)]
pub(crate) struct FailureGroup {
    stage: String,
    kind: String,
    count: usize,
    example_key: String,
    example_error: String,
}

#[derive(Serialize)]
struct Status {
    run: idempipe_engine::Run,
    /// For a running run: running, interrupted (nobody serves it) or queued.
    activity: Option<RunActivity>,
    stages: Vec<StageStatus>,
    failures: Vec<FailureGroup>,
}

/// The kind an error is grouped under: its `kind`, refined by HTTP status or error code.
fn kind_of(error: Option<&Value>) -> String {
    let Some(e) = error else {
        return "unknown".into();
    };
    let base = e
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("error")
        .to_string();
    match (
        e.get("status").and_then(Value::as_u64),
        e.get("code").and_then(Value::as_str),
    ) {
        (Some(s), _) => format!("{base} (HTTP {s})"),
        (None, Some(c)) => format!("{base} ({c})"),
        _ => base,
    }
}

/// Groups the failed, dead and unknown items of a run by stage and kind of error.
pub(crate) async fn failure_groups(
    store: &dyn idempipe_engine::Store,
    run: i64,
) -> anyhow::Result<Vec<FailureGroup>> {
    let failed = store
        .item_list(&ItemFilter {
            run_id: run,
            statuses: vec![ItemStatus::Failed, ItemStatus::Dead, ItemStatus::Unknown],
            ..Default::default()
        })
        .await?;
    let mut groups: BTreeMap<(String, String), FailureGroup> = BTreeMap::new();
    for item in failed {
        let kind = kind_of(item.last_error.as_ref());
        groups
            .entry((item.stage.clone(), kind.clone()))
            .and_modify(|g| g.count += 1)
            .or_insert_with(|| FailureGroup {
                stage: item.stage.clone(),
                kind,
                count: 1,
                example_key: item.key.clone(),
                example_error: item.last_error.as_ref().map(error_text).unwrap_or_default(),
            });
    }
    let mut groups: Vec<FailureGroup> = groups.into_values().collect();
    groups.sort_by_key(|g| std::cmp::Reverse(g.count));
    Ok(groups)
}

/// Prints the status.
pub(crate) async fn run(args: StatusArgs) -> anyhow::Result<i32> {
    let store = args.db.open().await?;
    let run = store.run_get(args.run).await?;
    let now = SystemClock.now();
    let mut stages: BTreeMap<String, StageStatus> = BTreeMap::new();
    for c in store.item_counts(run.id).await? {
        let s = stages
            .entry(c.stage.clone())
            .or_insert_with(|| StageStatus {
                stage: c.stage.clone(),
                ..Default::default()
            });
        s.counts.insert(c.status, c.count);
    }
    for s in stages.values_mut() {
        let t: Throughput = store
            .stage_throughput(run.id, &s.stage, RATE_WINDOW_MS, now)
            .await?;
        s.rate_per_second = t.per_second;
        s.eta_seconds = t.eta_seconds.filter(|_| t.remaining > 0);
    }
    let activity = store
        .run_activity(&[run.id], now)
        .await?
        .first()
        .map(|(_, a)| *a);
    let status = Status {
        activity,
        failures: failure_groups(&*store, run.id).await?,
        stages: stages.into_values().collect(),
        run,
    };
    if args.out.json {
        print_json(&status)?;
        return Ok(0);
    }
    let r = &status.run;
    println!(
        "run {}  {}{}  {}",
        r.id,
        status
            .activity
            .map_or(r.status.as_str(), RunActivity::as_str),
        if r.paused { " (paused)" } else { "" },
        r.input
    );
    match status.activity {
        Some(RunActivity::Interrupted) => println!(
            "no worker serves this run: rerun its `idempipe process` command or start `idempipe worker` to resume it"
        ),
        Some(RunActivity::Queued) => {
            println!("waiting for a worker: start `idempipe worker` on its database")
        }
        _ => {}
    }
    let columns = [
        "completed",
        "running",
        "pending",
        "waiting",
        "failed",
        "dead",
        "unknown",
        "cancelled",
    ];
    print!("{:<12}", "stage");
    for c in columns {
        print!(" {c:>9}");
    }
    println!(" {:>9} {:>8}", "rate/s", "eta");
    for s in &status.stages {
        print!("{:<12}", s.stage);
        for c in columns {
            print!(" {:>9}", s.counts.get(c).copied().unwrap_or(0));
        }
        let eta = s.eta_seconds.map(duration).unwrap_or_else(|| "-".into());
        println!(" {:>9.1} {:>8}", s.rate_per_second, eta);
    }
    if !status.failures.is_empty() {
        println!("\nfailures by kind:");
        for g in &status.failures {
            println!(
                "  {:>6} x {} {}  e.g. {}: {}",
                g.count, g.stage, g.kind, g.example_key, g.example_error
            );
        }
        println!(
            "\n`idempipe failures {}` lists them; `idempipe retry {}` re-runs only those.",
            r.id, r.id
        );
    }
    Ok(0)
}
