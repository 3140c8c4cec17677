//! Kill storm: three workers, one (picked at random) SIGKILLed and restarted every 2 s for
//! the whole run.

use std::time::{Duration, Instant};

use idempipe_engine::RunStatus;

use crate::env::{sigkill, sigterm};
use crate::report::Row;

use super::{Backend, CONCURRENCY, Case, RUN_TIMEOUT, Suite};

/// Time between kills.
const PERIOD: Duration = Duration::from_secs(2);
/// Workers serving the run.
const WORKERS: usize = 3;
/// Most `idempipe retry`s of a run failed by items killed out of attempts.
const MAX_RETRIES: usize = 5;
/// The API's delay per call: long enough that a run spans several kill periods on an
/// idle machine (100 frames at 20 ms were done after one kill), and that kills land
/// while calls are under way.
const API_LATENCY_MS: &str = "400";

/// Runs the scenario on `backend`.
pub(crate) async fn run(suite: &Suite, backend: Backend) -> anyhow::Result<Row> {
    let case = Case::new(
        suite,
        "kill-storm",
        backend,
        &["--latency-ms", API_LATENCY_MS],
    )
    .await?;
    let watch = case.submit().await?;
    let spawn = |i: usize, generation: usize| {
        let name = format!("w{i}-{generation}");
        case.suite.env.spawn(
            &case.worker_args(&case.db, &name),
            &case.dir.join(format!("{name}.log")),
        )
    };
    let mut workers = (0..WORKERS)
        .map(|i| spawn(i, 0))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let started = Instant::now();
    let mut kills = 0;
    let mut last_kill = started;
    let mut revived = Vec::new();
    let status = loop {
        match watch.wait_end(PERIOD).await {
            // An item killed as often as its stage allows attempts goes dead, with
            // `lease_expired` as its reason, and fails the run: nothing is lost, and the
            // documented remedy is `idempipe retry`. The storm goes on meanwhile.
            Some(RunStatus::Failed) if revived.len() < MAX_RETRIES => {
                revived.extend(watch.dead_items().await?);
                case.retry(watch.run_id).await?;
            }
            Some(status) => break Some(status),
            None => {}
        }
        if started.elapsed() > RUN_TIMEOUT {
            break None;
        }
        let victim = fastrand::usize(..WORKERS);
        sigkill(&mut workers[victim]).await;
        kills += 1;
        last_kill = Instant::now();
        workers[victim] = spawn(victim, kills)?;
    };
    let ended = Instant::now();
    for worker in &mut workers {
        sigterm(worker, Duration::from_secs(10)).await;
    }
    let recover = watch.recovery(last_kill, Some(ended));
    // A killed worker loses at most the frames it held: its running handlers and the
    // outcomes waiting for their batched commit.
    let bound = kills as u64 * 2 * CONCURRENCY;
    let mut faults = format!("{kills} SIGKILLs");
    if !revived.is_empty() {
        faults.push_str(&format!(
            "; killed out of attempts, then `retry`: {}",
            revived.join(", ")
        ));
    }
    case.finish(Some(&watch), status, faults, recover, bound)
        .await
}
