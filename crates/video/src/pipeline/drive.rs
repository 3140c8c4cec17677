//! Running a worker and maintenance in this process until a run ends (what
//! `idempipe process` does), or until interrupted.

use std::future::Future;
use std::time::Duration;

use idempipe_engine::{
    DatabaseClock, Maintenance, MaintenanceConfig, Run, RunStatus, SharedStore, Worker,
    WorkerConfig, WorkerStats,
};
use tokio::sync::watch;

use super::error::PipelineError;
use super::progress::{ProgressStyle, draw_finished, wait_for_run};
use super::register::{PipelineOptions, register};
use super::stage;

/// How often [`drive`] looks at its worker's counters for the end of its run's last
/// item, the assembly, to finish the run at once rather than at the next maintenance
/// pass and progress poll (up to 0.7 s, on 10 s clips that take 6 s in all). Counters
/// are memory reads; the store is asked only when an outcome was recorded and nothing
/// else is running.
const LAST_ITEM_CHECK: Duration = Duration::from_millis(20);

/// How [`drive`] runs the work.
#[derive(Debug, Clone)]
pub struct DriveOptions {
    /// Handler calls at once [default: [`default_concurrency`]].
    pub concurrency: usize,
    /// Time between maintenance passes (rescues, finishing the run).
    pub maintenance_interval: Duration,
    /// How in-flight calls may finish after an interrupt.
    pub shutdown_grace: Duration,
    /// Progress display.
    pub progress: ProgressStyle,
    /// Stage tunables.
    pub pipeline: PipelineOptions,
    /// Also serve every other unfinished run in the database (default: only `run_id`).
    pub serve_all_runs: bool,
}

impl Default for DriveOptions {
    fn default() -> Self {
        Self {
            concurrency: default_concurrency(),
            maintenance_interval: Duration::from_millis(200),
            shutdown_grace: Duration::from_secs(10),
            progress: ProgressStyle::Auto,
            pipeline: PipelineOptions::default(),
            serve_all_runs: false,
        }
    }
}

/// Handler slots per CPU by default. Frames' API calls wait on the network and take
/// little CPU, so a worker runs several per core; decoding and encoding take at most one
/// slot per CPU ([`PipelineOptions::cpu_slots`]). Not more: each frame in flight holds
/// its original, its PNG, the answer and the enhanced frame: at 1080p on 2 CPUs over an
/// API, 4 per CPU measured a 209 MiB peak RSS, 3 per CPU 201-211 MiB and 2 per CPU
/// 151 MiB (budget: 200), and 2 per CPU was also the fastest of the three on a quiet
/// machine.
pub const SLOTS_PER_CPU: usize = 2;

/// The default number of handler calls at once: [`SLOTS_PER_CPU`] per CPU.
pub fn default_concurrency() -> usize {
    super::register::cpus() * SLOTS_PER_CPU
}

/// The run, once its assembly item has ended and `finisher` marked it finished, looked
/// for whenever `stats` show a new outcome and no item running. Runs that end otherwise
/// (an item dead before the assembly) are seen by the maintenance passes and
/// [`wait_for_run`].
async fn finished_after_assembly(
    store: &SharedStore,
    run_id: i64,
    stats: &WorkerStats,
    finisher: &Maintenance,
) -> Result<Run, idempipe_engine::StoreError> {
    let mut seen = 0;
    loop {
        tokio::time::sleep(LAST_ITEM_CHECK).await;
        let [claimed, completed, failed, dead, lease_lost, released] = stats.snapshot();
        let settled = completed + failed + dead + lease_lost + released;
        if settled == seen || claimed > settled {
            continue;
        }
        seen = settled;
        let assembled = match store.item_get(run_id, stage::ASSEMBLE, "assemble").await {
            Ok(item) => item.status.is_final(),
            Err(idempipe_engine::StoreError::NotFound { .. }) => false,
            Err(e) => return Err(e),
        };
        if !assembled {
            continue;
        }
        finisher.finish_runs_once().await?;
        let run = store.run_get(run_id).await?;
        if run.status != RunStatus::Running {
            return Ok(run);
        }
    }
}

/// How [`drive`] ended.
#[derive(Debug, Clone)]
pub enum DriveOutcome {
    /// The run completed, failed or was cancelled.
    Finished(Run),
    /// The interrupt fired first; work done so far is kept and a rerun resumes.
    Interrupted,
}

/// Serves `run_id` (every video run in `store` with `serve_all_runs`) with an in-process
/// worker and maintenance until `run_id` ends or `interrupt` resolves, then shuts both
/// down: calls in flight stop at once and their items are given back.
pub async fn drive(
    store: SharedStore,
    run_id: i64,
    options: &DriveOptions,
    interrupt: impl Future<Output = ()>,
) -> Result<DriveOutcome, PipelineError> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let config = WorkerConfig {
        concurrency: options.concurrency,
        shutdown_grace: options.shutdown_grace,
        run: (!options.serve_all_runs).then_some(run_id),
        ..WorkerConfig::default()
    };
    // A bad setting must fail here, not in the spawned worker while we wait for the run.
    config.validate()?;
    // Leases follow the database's clock, not this machine's (which may jump).
    let clock = DatabaseClock::start(store.clone()).await?;
    let worker = register(
        Worker::new(store.clone(), config).with_clock(clock.clone()),
        store.clone(),
        &options.pipeline,
    );
    let stats = worker.stats();
    let worker = tokio::spawn(worker.run(stopped(stop_rx.clone())));
    let maintenance = |clock| {
        Maintenance::new(
            store.clone(),
            MaintenanceConfig {
                interval: options.maintenance_interval,
                retain: None,
            },
        )
        .with_clock(clock)
    };
    let finisher = maintenance(clock.clone());
    let maintenance = tokio::spawn(maintenance(clock).run(stopped(stop_rx)));
    let outcome = tokio::select! {
        run = wait_for_run(&store, run_id, options.progress) => run.map(DriveOutcome::Finished),
        run = finished_after_assembly(&store, run_id, &stats, &finisher) => match run {
            Ok(run) => draw_finished(&store, run_id, options.progress)
                .await
                .map(|()| DriveOutcome::Finished(run)),
            Err(e) => Err(e),
        },
        _ = interrupt => Ok(DriveOutcome::Interrupted),
    };
    let _ = stop_tx.send(true);
    let worker = worker.await;
    let _ = maintenance.await;
    match worker {
        Ok(Err(e)) => return Err(e.into()),
        Err(e) => tracing::error!(error = %e, "worker task failed"),
        Ok(Ok(_)) => {}
    }
    match outcome? {
        // The run may have ended between the last poll and the interrupt.
        DriveOutcome::Interrupted => {
            let run = store.run_get(run_id).await?;
            Ok(if run.status == RunStatus::Running {
                DriveOutcome::Interrupted
            } else {
                DriveOutcome::Finished(run)
            })
        }
        finished => Ok(finished),
    }
}
