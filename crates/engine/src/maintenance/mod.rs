//! Maintenance, the sidecar: rescue expired leases, finish runs, prune history.
//!
//! Each service is a `*_once` method that tests call directly with an injected clock; the
//! loop calls them on a ticker while this process holds leadership (PostgreSQL: an
//! advisory lock, taken over when the leader's connection dies). Retries need no service:
//! a failed item is claimable as soon as its `next_attempt_at` passes, and waiting items
//! are released in the transaction that completes their last input.

use std::future::Future;
use std::time::Duration;

use crate::clock::{SharedClock, system_clock};
use crate::error::StoreResult;
use crate::model::RunStatus;
use crate::store::{RescueReport, SharedStore};

/// Maintenance settings.
#[derive(Debug, Clone)]
pub struct MaintenanceConfig {
    /// Time between passes.
    pub interval: Duration,
    /// Finished runs older than this are deleted (None: keep everything).
    pub retain: Option<Duration>,
}

impl Default for MaintenanceConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            retain: None,
        }
    }
}

/// The maintenance services of one process.
#[derive(Debug, Clone)]
pub struct Maintenance {
    store: SharedStore,
    clock: SharedClock,
    config: MaintenanceConfig,
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Leases rescued.
    pub rescued: RescueReport,
    /// Runs that became completed or failed.
    pub finished: Vec<(i64, RunStatus)>,
    /// Runs pruned.
    pub pruned: u64,
}

impl Maintenance {
    /// Maintenance on `store` with the wall clock.
    pub fn new(store: SharedStore, config: MaintenanceConfig) -> Self {
        Self {
            store,
            clock: system_clock(),
            config,
        }
    }

    /// Uses `clock` instead of the wall clock.
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Rescues every item whose lease expired. Prefetched items whose handler never
    /// started go back first, without counting the attempt.
    pub async fn rescue_once(&self) -> StoreResult<RescueReport> {
        let mut total = RescueReport::default();
        while self.store.item_return_unstarted(self.clock.now()).await?
            >= crate::store::shared::RESCUE_BATCH as u64
        {}
        loop {
            let r = self.store.item_rescue_expired(self.clock.now()).await?;
            let n = r.retried + r.dead + r.unknown;
            total.retried += r.retried;
            total.dead += r.dead;
            total.unknown += r.unknown;
            if n < crate::store::shared::RESCUE_BATCH as u64 {
                return Ok(total);
            }
        }
    }

    /// Marks runs whose items are all final as completed or failed.
    pub async fn finish_runs_once(&self) -> StoreResult<Vec<(i64, RunStatus)>> {
        self.store.run_finish_ready(self.clock.now()).await
    }

    /// Deletes finished runs older than the retention.
    pub async fn prune_once(&self) -> StoreResult<u64> {
        match self.config.retain {
            Some(retain) => {
                self.store
                    .history_prune(self.clock.now() - retain.as_millis() as i64)
                    .await
            }
            None => Ok(0),
        }
    }

    /// One pass of every service.
    pub async fn pass(&self) -> StoreResult<PassReport> {
        let rescued = self.rescue_once().await?;
        let finished = self.finish_runs_once().await?;
        let pruned = self.prune_once().await?;
        if rescued != RescueReport::default() {
            tracing::info!(?rescued, "rescued expired leases");
        }
        for (run, status) in &finished {
            tracing::info!(run, status = status.as_str(), "run finished");
        }
        Ok(PassReport {
            rescued,
            finished,
            pruned,
        })
    }

    /// Runs passes on a ticker while leader, until `shutdown` resolves.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut ticker = tokio::time::interval(self.config.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut leading = false;
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = ticker.tick() => {}
            }
            match self.store.leader_try_acquire().await {
                Ok(now_leading) => {
                    if now_leading != leading {
                        tracing::info!(leader = now_leading, "maintenance leadership changed");
                    }
                    leading = now_leading;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "leadership check failed");
                    leading = false;
                }
            }
            if leading && let Err(e) = self.pass().await {
                tracing::warn!(error = %e, "maintenance pass failed; will retry");
            }
        }
    }
}
