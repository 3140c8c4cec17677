//! The worker's row in `workers`: written at start, renewed every liveness interval,
//! deleted on a clean stop. A killed worker's row goes stale on its own.

use std::time::Duration;

use crate::clock::{Millis, SharedClock};
use crate::store::{SharedStore, WorkerPresence};
use crate::worker::{LIVENESS_PERIODS, WorkerConfig};

/// Stale rows older than this are deleted by the next heartbeat of any worker.
const PRUNE_AFTER_MS: Millis = 24 * 3600 * 1000;

/// The running liveness task of one worker.
pub(crate) struct Presence {
    store: SharedStore,
    name: String,
    task: tokio::task::JoinHandle<()>,
}

impl Presence {
    /// Writes the row once, then renews it every `config.liveness_interval` until stopped.
    pub(crate) async fn start(
        store: SharedStore,
        clock: SharedClock,
        config: &WorkerConfig,
    ) -> Self {
        let now = clock.now();
        let mut row = WorkerPresence {
            name: config.name.clone(),
            host: host_name(),
            pid: i64::from(std::process::id()),
            run_id: config.run,
            started_at: now,
            last_seen_at: now,
            alive_until: now,
        };
        let interval = config.liveness_interval;
        beat(&store, &clock, &mut row, interval).await;
        let task = {
            let store = store.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(interval).await;
                    beat(&store, &clock, &mut row, interval).await;
                }
            })
        };
        Self {
            store,
            name: config.name.clone(),
            task,
        }
    }

    /// Stops renewing and deletes the row.
    pub(crate) async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
        if let Err(e) = self.store.worker_forget(&self.name).await {
            tracing::warn!(worker = %self.name, error = %e, "could not delete the worker's liveness row; it goes stale on its own");
        }
    }
}

async fn beat(
    store: &SharedStore,
    clock: &SharedClock,
    row: &mut WorkerPresence,
    interval: Duration,
) {
    let now = clock.now();
    row.last_seen_at = now;
    row.alive_until = now + (interval * LIVENESS_PERIODS).as_millis() as Millis;
    if let Err(e) = store.worker_beat(row, now - PRUNE_AFTER_MS).await {
        tracing::warn!(worker = %row.name, error = %e, "liveness heartbeat failed; retrying next interval");
    }
}

/// This machine's name: $HOSTNAME, else the kernel's, else "unknown".
fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}
