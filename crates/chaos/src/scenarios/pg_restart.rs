//! PostgreSQL stopped hard (`pg_ctl -m immediate`, like a crash) and started again
//! mid-run, twice, with two workers running through it.

use std::time::{Duration, Instant};

use crate::env::sigterm;
use crate::report::Row;
use crate::watch::Watch;

use super::{Backend, CONCURRENCY, Case, RUN_TIMEOUT, Suite};

/// How long the database stays down each time.
const DOWN: Duration = Duration::from_secs(3);
/// Workers serving the run.
const WORKERS: usize = 2;

/// Runs the scenario on `backend` (PostgreSQL only).
pub(crate) async fn run(suite: &Suite, backend: Backend) -> anyhow::Result<Row> {
    let case = Case::new(suite, "pg-restart", backend, &["--latency-ms", "20"]).await?;
    let watch = case.submit().await?;
    let mut workers = (0..WORKERS)
        .map(|i| {
            let name = format!("w{i}");
            case.suite.env.spawn(
                &case.worker_args(&case.db, &name),
                &case.dir.join(format!("{name}.log")),
            )
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let frames = suite.reference.frame_hashes.len() as i64;
    let mut restarted = Instant::now();
    let mut stops = 0;
    for fraction in [0.2, 0.6] {
        if !wait_progress(&watch, (frames as f64 * fraction) as i64).await {
            break;
        }
        suite.pg.stop_immediate().await?;
        tokio::time::sleep(DOWN).await;
        suite.pg.start().await?;
        stops += 1;
        restarted = Instant::now();
    }
    let status = watch.wait_end(RUN_TIMEOUT).await;
    let ended = Instant::now();
    for worker in &mut workers {
        sigterm(worker, Duration::from_secs(10)).await;
    }
    let recover = watch.recovery(restarted, Some(ended));
    let bound = (stops * WORKERS) as u64 * 2 * CONCURRENCY;
    let faults = format!("{stops} immediate stops, {} s down each", DOWN.as_secs());
    case.finish(Some(&watch), status, faults, recover, bound)
        .await
}

/// Waits until `frames` frames are done; false if the run ended or stalled first.
pub(crate) async fn wait_progress(watch: &Watch, frames: i64) -> bool {
    let deadline = Instant::now() + RUN_TIMEOUT;
    while watch.completed_now() < frames {
        if Instant::now() > deadline || watch.wait_end(Duration::from_millis(100)).await.is_some() {
            return false;
        }
    }
    true
}
