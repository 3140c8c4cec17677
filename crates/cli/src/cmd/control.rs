//! `idempipe retry|cancel|pause|resume`: steer a run; each prints what it changed.

use anyhow::Context;
use idempipe_engine::store::RetryParams;
use idempipe_engine::{Clock, ItemStatus, Run, RunStatus, SharedStore, SystemClock};
use idempipe_video::pipeline::{self, ChangeOutcome, RunParams, Settings};
use serde_json::json;

use super::process::EXIT_USAGE;

use crate::db::DbArgs;
use crate::output::{JsonArg, print_json};

/// Re-run the failed items of a run (and, if asked, dead and unknown ones); with
/// --preset/--crf/--api/--api-rate, first change those settings of the run (frames already
/// enhanced are kept).
#[derive(clap::Args, Debug)]
pub(crate) struct RetryArgs {
    /// Run id.
    run: i64,
    /// Only this stage.
    #[arg(long)]
    stage: Option<String>,
    /// Also revive dead items (permanent errors, attempts exhausted). On by default when
    /// neither --dead nor --unknown nor --failed-only is given.
    #[arg(long)]
    dead: bool,
    /// Also retry unknown items (an outside call may have happened; it will be sent again
    /// with the same idempotency key).
    #[arg(long)]
    unknown: bool,
    /// Retry only items in `failed` (waiting for their backoff): make them due now.
    #[arg(long, conflicts_with_all = ["dead", "unknown"])]
    failed_only: bool,
    /// New settings for the run (enhanced frames are kept).
    #[command(flatten)]
    change: ChangeArgs,
    #[command(flatten)]
    db: DbArgs,
    #[command(flatten)]
    out: JsonArg,
}

/// Settings `retry` may change on an existing run: they do not change the enhanced
/// frames, so frames already enhanced are kept and only later stages run again.
#[derive(clap::Args, Debug)]
pub(crate) struct ChangeArgs {
    /// New libx264 preset (the segments are encoded again; only while none is encoded yet).
    #[arg(long, value_name = "P")]
    preset: Option<String>,
    /// New H.264 quality, 0..=51 (as --preset).
    #[arg(long, value_name = "Q", value_parser = clap::value_parser!(u8).range(0..=51))]
    crf: Option<u8>,
    /// New enhancement API base URL (or `local`): frames not enhanced yet go there, with
    /// the same idempotency keys.
    #[arg(long, value_name = "URL")]
    api: Option<String>,
    /// New enhancement calls per second across all workers.
    #[arg(long, value_name = "R")]
    api_rate: Option<f64>,
}

impl ChangeArgs {
    fn any(&self) -> bool {
        self.preset.is_some() || self.crf.is_some() || self.api.is_some() || self.api_rate.is_some()
    }

    /// `current` with the flags given applied.
    fn apply(&self, current: &Settings) -> Settings {
        let mut s = current.clone();
        if let Some(p) = &self.preset {
            s.preset = p.clone();
        }
        if let Some(q) = self.crf {
            s.crf = q;
        }
        if let Some(api) = &self.api {
            s.provider = api.clone();
        }
        if let Some(r) = self.api_rate {
            s.api_rate = r;
        }
        s
    }
}

/// Applies `retry`'s setting flags to the run; `Err(code)` when refused.
async fn change_settings(
    store: &SharedStore,
    run_id: i64,
    change: &ChangeArgs,
) -> anyhow::Result<Result<Option<String>, i32>> {
    let run = store.run_get(run_id).await?;
    let params: RunParams = serde_json::from_value(run.params.clone())
        .with_context(|| format!("run {run_id}: not a video run; its settings cannot change"))?;
    let new = change.apply(&params.settings);
    let outcome = match pipeline::change_settings(store, &run, &new).await {
        Ok(outcome) => outcome,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(Err(EXIT_USAGE));
        }
    };
    if change.api_rate.is_some() || change.api.is_some() {
        pipeline::ensure_limiter(store, &new.provider, new.api_rate).await?;
    }
    Ok(match outcome {
        ChangeOutcome::Unchanged => Ok(None),
        ChangeOutcome::Changed(notice) => Ok(Some(notice)),
        ChangeOutcome::NeedsNewRun(why) => {
            eprintln!(
                "error: {why}; run `idempipe process` with the new settings to start a new run"
            );
            Err(EXIT_USAGE)
        }
    })
}

/// Retries.
pub(crate) async fn retry(args: RetryArgs) -> anyhow::Result<i32> {
    let store = args.db.open().await?;
    let notice = if args.change.any() {
        match change_settings(&store, args.run, &args.change).await? {
            Ok(notice) => notice,
            Err(code) => return Ok(code),
        }
    } else {
        None
    };
    if let (Some(notice), false) = (&notice, args.out.json) {
        println!("{notice}");
    }
    let mut statuses = vec![ItemStatus::Failed];
    if args.dead || (!args.unknown && !args.failed_only) {
        statuses.push(ItemStatus::Dead);
    }
    if args.unknown {
        statuses.push(ItemStatus::Unknown);
    }
    let params = RetryParams {
        run_id: args.run,
        stage: args.stage.clone(),
        statuses: statuses.clone(),
    };
    let n = store.item_retry(&params, SystemClock.now()).await?;
    let names: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
    if args.out.json {
        print_json(
            &json!({ "run": args.run, "stage": args.stage, "statuses": names, "retried": n, "settings_changed": notice }),
        )?;
    } else {
        let scope = args
            .stage
            .as_deref()
            .map(|s| format!(" of stage {s}"))
            .unwrap_or_default();
        println!(
            "run {}: {n} item(s){scope} in {} made due again",
            args.run,
            names.join("/")
        );
        if n > 0 {
            println!("a worker (`idempipe worker`, or rerunning `idempipe process`) picks them up");
        }
    }
    Ok(0)
}

/// Cancel a run: every item not yet final is cancelled; running handlers are told to stop.
#[derive(clap::Args, Debug)]
pub(crate) struct CancelArgs {
    /// Run id.
    run: i64,
    #[command(flatten)]
    db: DbArgs,
    #[command(flatten)]
    out: JsonArg,
}

/// Cancels.
pub(crate) async fn cancel(args: CancelArgs) -> anyhow::Result<i32> {
    let store = args.db.open().await?;
    if let Err(message) = still_running(&store.run_get(args.run).await?) {
        eprintln!("error: {message}");
        return Ok(EXIT_USAGE);
    }
    let n = store.run_cancel(args.run, SystemClock.now()).await?;
    if args.out.json {
        print_json(&json!({ "run": args.run, "cancelled_items": n }))?;
    } else {
        println!(
            "run {}: cancelled; {n} item(s) that were not final are now cancelled",
            args.run
        );
    }
    Ok(0)
}

/// Pause or resume a run, or one stage of it.
#[derive(clap::Args, Debug)]
pub(crate) struct PauseArgs {
    /// Run id.
    run: i64,
    /// Only this stage.
    #[arg(long)]
    stage: Option<String>,
    #[command(flatten)]
    db: DbArgs,
    #[command(flatten)]
    out: JsonArg,
}

/// Pauses (`paused` true) or resumes.
pub(crate) async fn pause(args: PauseArgs, paused: bool) -> anyhow::Result<i32> {
    let store = args.db.open().await?;
    let run = store.run_get(args.run).await?;
    let checked = match still_running(&run) {
        Ok(()) => known_stage(&store, &run, args.stage.as_deref()).await?,
        Err(message) => Err(message),
    };
    if let Err(message) = checked {
        eprintln!("error: {message}");
        return Ok(EXIT_USAGE);
    }
    store
        .run_pause(args.run, args.stage.as_deref(), paused)
        .await?;
    let what = if paused { "paused" } else { "resumed" };
    if args.out.json {
        print_json(&json!({ "run": args.run, "stage": args.stage, "state": what }))?;
    } else {
        match &args.stage {
            Some(s) => println!("run {}: stage {s} {what}", args.run),
            None => println!("run {}: {what}", args.run),
        }
    }
    Ok(0)
}

/// Pause, resume and cancel apply to running runs only; the error says what to do instead.
fn still_running(run: &Run) -> Result<(), String> {
    match run.status {
        RunStatus::Running => Ok(()),
        RunStatus::Failed => Err(format!(
            "run {} is failed: it cannot be paused, resumed or cancelled; \
             `idempipe retry {}` re-runs its failed items",
            run.id, run.id
        )),
        status => Err(format!(
            "run {} is {}: a finished run cannot be paused, resumed or cancelled",
            run.id,
            status.as_str()
        )),
    }
}

/// Whether `stage` (if given) is a stage of the run's pipeline; the error lists the valid
/// names.
async fn known_stage(
    store: &SharedStore,
    run: &Run,
    stage: Option<&str>,
) -> anyhow::Result<Result<(), String>> {
    let Some(stage) = stage else {
        return Ok(Ok(()));
    };
    let valid: Vec<String> = if run.pipeline == idempipe_video::pipeline::PIPELINE {
        idempipe_video::pipeline::stage::ALL
            .iter()
            .map(|s| s.to_string())
            .collect()
    } else {
        // Another pipeline: the stages its items belong to.
        let mut stages: Vec<String> = store
            .item_counts(run.id)
            .await?
            .into_iter()
            .map(|c| c.stage)
            .collect();
        stages.dedup();
        stages
    };
    if valid.iter().any(|s| s == stage) {
        return Ok(Ok(()));
    }
    Ok(Err(format!(
        "run {} has no stage {stage:?}; its stages are: {}",
        run.id,
        valid.join(", ")
    )))
}
