//! SIGKILL of `idempipe process` at many moments of one run (split, extract, frames,
//! encode and assemble among them): every rerun resumes the same run, and the final
//! output is byte-identical to a clean run's.

use std::time::{Duration, Instant};

use tokio::process::Child;

use crate::env::sigkill;
use crate::report::Row;
use crate::watch::Watch;

use super::{Backend, CONCURRENCY, Case, RUN_TIMEOUT, Suite};

/// Where a kill lands.
#[derive(Debug, Clone, Copy)]
enum Target {
    /// While an item of this stage runs.
    Stage(&'static str),
    /// After a random delay.
    Random,
}

/// The kills of a profile: the named stages once each, the rest at random moments.
fn targets(kills: usize) -> Vec<Target> {
    let named = ["split", "extract", "encode", "assemble"].map(Target::Stage);
    let mut all = vec![named[0], named[1]];
    all.extend(std::iter::repeat_n(Target::Random, kills.saturating_sub(4)));
    all.extend([named[2], named[3]]);
    all
}

/// Most `idempipe retry`s of a run failed by items killed out of attempts.
const MAX_RETRIES: usize = 5;

/// The faults column: the kills, and the items they killed out of attempts.
fn faults(kills: usize, revived: &[String]) -> String {
    let mut text = format!("{kills} SIGKILLs of process");
    if !revived.is_empty() {
        text.push_str(&format!(
            "; killed out of attempts, then `retry`: {}",
            revived.join(", ")
        ));
    }
    text
}

/// Runs the scenario on `backend`.
pub(crate) async fn run(suite: &Suite, backend: Backend) -> anyhow::Result<Row> {
    let case = Case::new(suite, "process-kills", backend, &["--latency-ms", "20"]).await?;
    let kills_wanted = if suite.env.quick { 6 } else { 20 };
    let log = case.dir.join("process.log");
    let mut watch: Option<Watch> = None;
    let mut kills = 0;
    let mut last_kill = Instant::now();
    for target in targets(kills_wanted) {
        let mut process = case.suite.env.spawn(&case.process_args(&case.db), &log)?;
        if watch.is_none() {
            watch = Some(Watch::attach(&case.db, Duration::from_secs(30)).await?);
        }
        let w = watch.as_ref().expect("attached above");
        if kill_at(target, w, &mut process).await {
            kills += 1;
            last_kill = Instant::now();
        } else if process.try_wait()?.is_some() {
            break;
        }
    }
    let watch = watch.expect("attached");
    let mut revived = Vec::new();
    let ended = loop {
        let mut last = case.suite.env.spawn(&case.process_args(&case.db), &log)?;
        let exit = tokio::time::timeout(RUN_TIMEOUT, last.wait()).await;
        let ended = Instant::now();
        match exit {
            Err(_) => {
                sigkill(&mut last).await;
                break ended;
            }
            // An item killed in each of its attempts is dead (`lease_expired`) and the
            // run failed: nothing is lost, and `idempipe retry` is the remedy.
            Ok(Ok(code)) if !code.success() && revived.len() < MAX_RETRIES => {
                let dead = watch.dead_items().await?;
                if dead.is_empty() {
                    break ended;
                }
                revived.extend(dead);
                case.retry(watch.run_id).await?;
            }
            Ok(_) => break ended,
        }
    };
    let status = watch.wait_end(Duration::from_secs(5)).await;
    let recover = watch.recovery(last_kill, Some(ended));
    let runs = watch.run_count().await?;
    let byte_identical = suite.reference.same_bytes(&case.output);
    let mut row = case
        .finish(
            Some(&watch),
            status,
            faults(kills, &revived),
            recover,
            kills as u64 * 2 * CONCURRENCY,
        )
        .await?;
    if runs != 1 {
        row.problems
            .push(format!("{runs} runs: a rerun started over"));
    }
    if !byte_identical {
        row.problems.push("output not byte-identical".into());
    }
    Ok(row)
}

/// Kills `process` at `target`; false if it ended (or never reached it) first.
async fn kill_at(target: Target, watch: &Watch, process: &mut Child) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    match target {
        Target::Random => {
            let ms = fastrand::u64(300..2500);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        Target::Stage(stage) => {
            while !watch.stage_running(stage).await {
                if Instant::now() > deadline || matches!(process.try_wait(), Ok(Some(_))) {
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    if matches!(process.try_wait(), Ok(Some(_))) {
        return false;
    }
    sigkill(process).await;
    true
}
