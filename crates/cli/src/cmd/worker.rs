//! `idempipe worker --db URL`: serve every video run in the database until SIGINT or
//! SIGTERM (a second one quits at once), with maintenance (one process leads it at a time).

use std::time::Duration;

use anyhow::Context;
use clap::Args;
use idempipe_engine::{Maintenance, MaintenanceConfig, Worker, WorkerConfig};
use idempipe_video::pipeline::{self, PipelineOptions};
use tokio::sync::watch;

use crate::db::DbArgs;

use super::process::{open_storage, open_store};

/// Arguments of `idempipe worker`.
#[derive(Debug, Args)]
pub(crate) struct WorkerArgs {
    /// The database shared with the other workers (postgres://... for several machines).
    #[command(flatten)]
    pub(crate) db: DbArgs,
    /// Handler calls at once, at least 1; decoding and encoding take at most one per CPU,
    /// the rest serve frames' API calls [default: 2 x the number of CPUs].
    #[arg(long, value_name = "N", value_parser = crate::lifecycle::at_least_one)]
    pub(crate) concurrency: Option<usize>,
    /// Name recorded on the items this worker runs [default: host-pid-random].
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// Also serve Prometheus metrics of this worker (handler durations, outcomes, claims,
    /// enhancement API latency, items and limiters) at http://ADDR/metrics. No token: bind
    /// it to an address only your monitoring can reach.
    #[arg(long, value_name = "ADDR")]
    pub(crate) metrics_listen: Option<std::net::SocketAddr>,
    /// Where this machine keeps the Whisper model, for runs with local captions
    /// [default: the directory each run was submitted with]
    #[arg(long, value_name = "DIR", env = "IDEMPIPE_WHISPER_MODEL")]
    pub(crate) whisper_model: Option<std::path::PathBuf>,
    /// This worker's own directory for local copies of files kept in object storage
    /// (nothing in it is shared with other workers) [default: a directory under the
    /// system temporary directory]
    #[arg(long, value_name = "DIR")]
    pub(crate) scratch: Option<std::path::PathBuf>,
    /// Lease and API timeout of this worker's handlers.
    #[command(flatten)]
    pub(crate) tuning: super::tuning::TuningArgs,
}

/// How long a worker cut off from the object store waits for its failures to be recorded
/// before it stops anyway.
const FAILURE_RECORD_WAIT: Duration = Duration::from_secs(10);

/// Resolves once `stats` count a failed or dead outcome more than now, or after `bound`.
async fn failure_recorded(stats: &idempipe_engine::WorkerStats, bound: Duration) {
    let failures = |s: &idempipe_engine::WorkerStats| {
        let [_, _, failed, dead, _, _] = s.snapshot();
        failed + dead
    };
    let before = failures(stats);
    let deadline = tokio::time::Instant::now() + bound;
    while failures(stats) == before && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `idempipe worker` until a signal; returns the exit code.
pub(crate) async fn run(args: WorkerArgs) -> anyhow::Result<i32> {
    // The recorder must exist before the worker records anything.
    let metrics = args
        .metrics_listen
        .map(|addr| (addr, idempipe_web::install_metrics_recorder()));
    let store = open_store(&args.db).await?;
    let (storage, _cleanup) = open_storage(args.scratch)?;
    let storage = std::sync::Arc::new(storage);
    let mut unreachable = storage.unreachable();
    let mut config = WorkerConfig {
        concurrency: args
            .concurrency
            .unwrap_or_else(idempipe_video::pipeline::default_concurrency),
        ..WorkerConfig::default()
    };
    if let Some(name) = args.name {
        config.name = name;
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    // Leases follow the database's clock, not this machine's (which may jump).
    let clock = idempipe_engine::DatabaseClock::start(store.clone()).await?;
    let worker = pipeline::register(
        Worker::new(store.clone(), config).with_clock(clock.clone()),
        store.clone(),
        &args.tuning.apply(PipelineOptions {
            whisper_model: args.whisper_model,
            storage: Some(storage.clone()),
            ..PipelineOptions::default()
        }),
    );
    let maintenance = Maintenance::new(
        store.clone(),
        MaintenanceConfig {
            interval: Duration::from_millis(500),
            retain: None,
        },
    )
    .with_clock(clock);
    if let Some((addr, handle)) = metrics {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen for metrics on {addr}"))?;
        tracing::info!(%addr, "serving metrics at /metrics");
        tokio::spawn(idempipe_web::serve_metrics(
            listener,
            handle,
            store.clone(),
            stopped(stop_rx.clone()),
        ));
    }
    let stats = worker.stats();
    let maintenance = tokio::spawn(maintenance.run(stopped(stop_rx.clone())));
    let worker = tokio::spawn(worker.run(stopped(stop_rx)));
    // A worker that cannot reach the object store would only fail item after item:
    // it stops taking work, and the items it failed are retried by the others.
    let cut_off = tokio::select! {
        () = crate::lifecycle::stop_signals() => None,
        Ok(()) = unreachable.changed() => unreachable.borrow().clone(),
    };
    if cut_off.is_some() {
        // The call that met the store is still returning its error: stopping now would
        // give its item back as if the shutdown had caused the error, and the attempt
        // would leave no trace. Stop once a failure is recorded (or a signal comes).
        tokio::select! {
            () = crate::lifecycle::stop_signals() => {}
            () = failure_recorded(&stats, FAILURE_RECORD_WAIT) => {}
        }
    }
    let _ = stop_tx.send(true);
    worker.await??;
    maintenance.await?;
    if let Some(error) = cut_off {
        eprintln!(
            "error: {error}\nthis worker cannot reach the object store and stops; the items it failed are retried by other workers"
        );
        return Ok(1);
    }
    Ok(0)
}
