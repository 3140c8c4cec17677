//! Workers: claim due items, run their handlers under a lease, record outcomes.
//!
//! A worker runs up to `concurrency` handler calls at once. The fetcher (`fetcher.rs`)
//! claims in the background: for free slots (`free slots x batch size`, capped by
//! `claim_batch`) and, with [`WorkerConfig::prefetch`], ahead of them; an item claimed
//! ahead counts its attempt only when a slot takes it, and goes back uncounted if it waits
//! longer than [`WorkerConfig::prefetch_ttl`] or its worker stops or dies. Each call gets a
//! heartbeat that extends the lease and tells the handler to stop when the lease is lost or
//! the run is cancelled. Outcomes go through one completer task that commits many of them
//! per transaction; a slot frees when its handler returns, so claims, handlers and commits
//! overlap, and leases of outcomes waiting for their commit stay renewed. Calls through a
//! shared limiter take units leased to the worker in chunks (`limiter_pool.rs`).
//!
//! On shutdown it stops claiming, gives back what it claimed but did not start, and stops
//! calls in flight at once, giving their items back without counting the attempt (their
//! outside programs are killed with them); only calls that started an outside call may
//! finish, within the grace period. The rest are aborted and their items given back too.
//!
//! A worker may serve a single run ([`WorkerConfig::run`]). While it runs it renews its row
//! in the `workers` table every `liveness_interval` and deletes it when it stops cleanly,
//! so [`Store::run_activity`](crate::store::Store::run_activity) can tell a served run from
//! an interrupted one.

mod batch;
mod completer;
mod fetcher;
mod heartbeat;
mod limiter_pool;
mod marks;
mod permit;
mod presence;
#[cfg(test)]
mod test_setup;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::task::JoinSet;

use crate::clock::{SharedClock, system_clock};
use crate::error::{StoreError, StoreResult};
use crate::handler::{BatchHandler, Handler, Single};
use crate::policy::StagePolicy;
use crate::store::SharedStore;
pub(crate) use marks::Marks;

/// Worker settings.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Name recorded on items and attempts.
    pub name: String,
    /// Handler calls running at once.
    pub concurrency: usize,
    /// Largest number of items claimed per query.
    pub claim_batch: i64,
    /// Longest wait between claims when idle (PostgreSQL wakes earlier on NOTIFY).
    pub poll_interval: Duration,
    /// How long in-flight calls that started an outside call may run after shutdown is
    /// requested (the others stop at once).
    pub shutdown_grace: Duration,
    /// Serve only this run (None: every run in the database).
    pub run: Option<i64>,
    /// How often the worker renews its liveness row; it counts as gone after
    /// [`LIVENESS_PERIODS`] intervals without one.
    pub liveness_interval: Duration,
    /// Handler calls' worth of items claimed ahead of the free slots (0: claim only for
    /// free slots). Their attempt counts only when a slot takes them.
    pub prefetch: usize,
    /// How long an item claimed ahead may wait for a slot before it is given back.
    pub prefetch_ttl: Duration,
}

/// Heartbeat intervals a worker may miss before it counts as gone.
pub const LIVENESS_PERIODS: u32 = 3;

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            name: default_worker_name(),
            concurrency: 8,
            claim_batch: 64,
            poll_interval: Duration::from_millis(250),
            shutdown_grace: Duration::from_secs(30),
            run: None,
            liveness_interval: Duration::from_secs(5),
            prefetch: 0,
            prefetch_ttl: Duration::from_secs(2),
        }
    }
}

impl WorkerConfig {
    /// Checks the values; the error names the field.
    pub fn validate(&self) -> StoreResult<()> {
        if self.concurrency == 0 {
            return Err(StoreError::Config(
                "worker.concurrency must be >= 1 (a worker with no slots never runs anything)"
                    .into(),
            ));
        }
        if self.claim_batch < 1 {
            return Err(StoreError::Config("worker.claim_batch must be >= 1".into()));
        }
        if self.poll_interval.is_zero() {
            return Err(StoreError::Config(
                "worker.poll_interval must be > 0".into(),
            ));
        }
        if self.prefetch_ttl.is_zero() {
            return Err(StoreError::Config("worker.prefetch_ttl must be > 0".into()));
        }
        if self.liveness_interval.is_zero() {
            return Err(StoreError::Config(
                "worker.liveness_interval must be > 0".into(),
            ));
        }
        Ok(())
    }
}

/// `host-pid-random`: unique per process, readable in SQL.
pub fn default_worker_name() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into());
    format!("{host}-{}-{:04x}", std::process::id(), fastrand::u16(..))
}

/// What a worker did, counted as it ran.
#[derive(Debug, Default, Serialize)]
pub struct WorkerStats {
    /// Items claimed.
    pub claimed: AtomicU64,
    /// Items completed.
    pub completed: AtomicU64,
    /// Attempts that failed and will be retried.
    pub failed: AtomicU64,
    /// Items that went dead.
    pub dead: AtomicU64,
    /// Outcomes rejected because the lease was lost.
    pub lease_lost: AtomicU64,
    /// Items given back at shutdown.
    pub released: AtomicU64,
}

impl WorkerStats {
    /// A plain snapshot: (claimed, completed, failed, dead, lease_lost, released).
    pub fn snapshot(&self) -> [u64; 6] {
        [
            &self.claimed,
            &self.completed,
            &self.failed,
            &self.dead,
            &self.lease_lost,
            &self.released,
        ]
        .map(|c| c.load(Ordering::Relaxed))
    }
}

/// A stage this worker serves.
pub(crate) struct Stage {
    pub(crate) policy: StagePolicy,
    pub(crate) handler: Arc<dyn BatchHandler>,
}

/// A worker process's engine: register stages, then [`Worker::run`].
pub struct Worker {
    store: SharedStore,
    clock: SharedClock,
    config: WorkerConfig,
    stages: Vec<Arc<Stage>>,
    stats: Arc<WorkerStats>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("config", &self.config)
            .field(
                "stages",
                &self
                    .stages
                    .iter()
                    .map(|s| &s.policy.name)
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// State shared by the worker loop and its batch tasks.
pub(crate) struct Shared {
    pub(crate) store: SharedStore,
    pub(crate) clock: SharedClock,
    pub(crate) stats: Arc<WorkerStats>,
    pub(crate) completer: completer::Completer,
    /// Leases of the batches in flight, renewed by one heartbeat task.
    pub(crate) leases: Arc<heartbeat::Leases>,
    /// Limiter units leased to this worker in chunks.
    pub(crate) permits: limiter_pool::Pools,
    /// External-call marks, written together.
    pub(crate) marks: Arc<Marks>,
    /// Stages whose limiter said "paused" or "circuit open", until when (ms).
    pub(crate) blocked: std::sync::Mutex<HashMap<String, i64>>,
    /// Turns true when the worker shuts down: calls without an outside call stop at once.
    pub(crate) stopping: tokio::sync::watch::Sender<bool>,
}

impl Shared {
    /// Whether the worker is shutting down.
    pub(crate) fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }
}

impl Worker {
    /// A worker on `store` with `config` and the wall clock.
    pub fn new(store: SharedStore, config: WorkerConfig) -> Self {
        Self {
            store,
            clock: system_clock(),
            config,
            stages: Vec::new(),
            stats: Arc::new(WorkerStats::default()),
        }
    }

    /// Uses `clock` instead of the wall clock.
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Serves stage `policy.name` with a per-item handler.
    pub fn handler(self, policy: StagePolicy, handler: impl Handler) -> Self {
        self.batch_handler(policy, Single(handler))
    }

    /// Serves stage `policy.name` with a batch handler (up to `policy.batch_size` items per call).
    pub fn batch_handler(mut self, policy: StagePolicy, handler: impl BatchHandler) -> Self {
        self.stages.push(Arc::new(Stage {
            policy,
            handler: Arc::new(handler),
        }));
        self
    }

    /// Counters, readable while the worker runs.
    pub fn stats(&self) -> Arc<WorkerStats> {
        self.stats.clone()
    }

    /// Runs until `shutdown` resolves, then drains gracefully.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> StoreResult<Arc<WorkerStats>> {
        self.config.validate()?;
        let policies: Vec<StagePolicy> = self.stages.iter().map(|s| s.policy.clone()).collect();
        self.store
            .stage_register(&policies, self.clock.now())
            .await?;
        let leases = Arc::new(heartbeat::Leases::default());
        let shared = Arc::new(Shared {
            completer: completer::Completer::start(completer::Sink {
                store: self.store.clone(),
                clock: self.clock.clone(),
                stats: self.stats.clone(),
                leases: leases.clone(),
            }),
            store: self.store.clone(),
            clock: self.clock.clone(),
            stats: self.stats.clone(),
            permits: limiter_pool::Pools::default(),
            marks: Marks::start(self.store.clone(), self.clock.clone()),
            blocked: std::sync::Mutex::new(HashMap::new()),
            leases,
            stopping: tokio::sync::watch::Sender::new(false),
        });
        let presence =
            presence::Presence::start(self.store.clone(), self.clock.clone(), &self.config).await;
        let heartbeat = {
            let shared = shared.clone();
            let tick = self.heartbeat_tick();
            tokio::spawn(async move {
                shared
                    .leases
                    .run(shared.store.clone(), shared.clock.clone(), tick)
                    .await
            })
        };
        tracing::info!(worker = %self.config.name, stages = ?policies.iter().map(|p| &p.name).collect::<Vec<_>>(),
            concurrency = self.config.concurrency, run = ?self.config.run, backend = self.store.backend(), "worker started");
        let mut tasks: JoinSet<()> = JoinSet::new();
        let mut held: Held = HashMap::new();
        let mut fetcher = fetcher::Fetcher::new(
            self.stages.clone(),
            &self.config,
            self.store.claims_with_outcomes(),
        );
        let mut shutdown = std::pin::pin!(shutdown);
        let mut work = self.store.work_signal();
        loop {
            for (token, ids) in fetcher.take_stale() {
                tokio::spawn(give_back(shared.clone(), token, ids, "not started in time"));
            }
            let free = self.config.concurrency.saturating_sub(tasks.len());
            for (unit, ahead) in fetcher.pop(free) {
                let ids = unit.items.iter().map(|i| i.id).collect();
                let token = unit.token;
                let handle = tasks.spawn(batch::run(shared.clone(), unit));
                held.insert(handle.id(), (token, ahead, ids));
            }
            fetcher.claim(&shared, tasks.len());
            let stale_at = fetcher.next_stale_at();
            let claiming = fetcher.claiming();
            tokio::select! {
                biased;
                _ = &mut shutdown => break,
                Some(done) = tasks.join_next_with_id() => {
                    forget_task(&mut held, done);
                    while let Some(done) = tasks.try_join_next_with_id() {
                        forget_task(&mut held, done);
                    }
                    // A call that ended without outcomes frees its slot with no flush to
                    // carry the claim order: the order claims on its own.
                    shared.completer.revoke_if_idle();
                }
                Some(claimed) = fetcher.next_claim(), if claiming => {
                    fetcher.accept(&shared, claimed);
                }
                _ = tokio::time::sleep_until(stale_at.unwrap_or_else(tokio::time::Instant::now)), if stale_at.is_some() => {}
                // Nothing to claim now (every stage came back short or is held back by its
                // limiter, or no room): wait for new work, or poll. A signal sent while a
                // claim was in flight is kept, so this returns at once after it.
                _ = tokio::time::timeout(self.config.poll_interval, work.changed()), if !claiming => {
                    fetcher.wake();
                }
            }
        }
        // Claims stop; what they brought and what still waits goes back uncounted.
        for (token, ids) in fetcher.drain(&shared).await {
            give_back(shared.clone(), token, ids, "worker stopping").await;
        }
        shared.stopping.send_replace(true);
        self.drain(&shared, tasks, held).await;
        // Outcomes still queued commit before their leases stop being renewed.
        shared.completer.close().await;
        heartbeat.abort();
        presence.stop().await;
        let [claimed, completed, failed, dead, lease_lost, released] = self.stats.snapshot();
        tracing::info!(worker = %self.config.name, claimed, completed, failed, dead, lease_lost,
            released, "worker stopped");
        Ok(self.stats)
    }

    /// Heartbeat granularity: a sixth of the shortest lease, at least 20 ms.
    fn heartbeat_tick(&self) -> Duration {
        let shortest = self
            .stages
            .iter()
            .map(|s| s.policy.lease)
            .min()
            .unwrap_or(Duration::from_secs(30));
        (shortest / 6).max(Duration::from_millis(20))
    }

    /// Waits for calls in flight (told to stop unless they started an outside call) within
    /// the grace period, then aborts and releases the rest.
    async fn drain(&self, shared: &Arc<Shared>, mut tasks: JoinSet<()>, mut held: Held) {
        tracing::info!(in_flight = tasks.len(), grace = ?self.config.shutdown_grace, "shutting down: no new claims");
        let deadline = tokio::time::sleep(self.config.shutdown_grace);
        let mut deadline = std::pin::pin!(deadline);
        while !tasks.is_empty() {
            tokio::select! {
                Some(done) = tasks.join_next_with_id() => forget_task(&mut held, done),
                _ = &mut deadline => break,
            }
        }
        tasks.abort_all();
        while let Some(done) = tasks.join_next_with_id().await {
            // A task that ended on its own handed its outcomes to the completer: only the
            // items of aborted tasks are given back.
            if let Ok((id, ())) = done {
                held.remove(&id);
            }
        }
        for (token, ahead, ids) in held.into_values() {
            // A unit claimed ahead may have been aborted before or after its start, or
            // during it, with its `item_start` still on its way to the server. The claim-
            // ahead token goes first: once given back under it, a late start finds
            // nothing to start; if the start won, the attempt's token finds the item.
            // (The other order missed a start landing between the two.)
            for token in ahead.into_iter().chain(std::iter::once(token)) {
                give_back(shared.clone(), token, ids.clone(), "aborted at shutdown").await;
            }
        }
    }
}

/// Units running, by task: (lease token, claim-ahead token, item ids), to give back at
/// shutdown.
type Held = HashMap<tokio::task::Id, (i64, Option<i64>, Vec<i64>)>;

/// Gives items back without counting their attempt (fenced by `token`).
async fn give_back(shared: Arc<Shared>, token: i64, ids: Vec<i64>, why: &'static str) {
    match shared
        .store
        .item_release(&ids, token, shared.clock.now())
        .await
    {
        Ok(n) => {
            shared.stats.released.fetch_add(n, Ordering::Relaxed);
            tracing::debug!(items = ?ids, released = n, why, "items given back");
        }
        Err(e) => {
            tracing::warn!(error = %e, items = ?ids, why, "could not give items back; their leases will expire")
        }
    }
}

fn forget_task(held: &mut Held, done: Result<(tokio::task::Id, ()), tokio::task::JoinError>) {
    match done {
        Ok((id, ())) => {
            held.remove(&id);
        }
        Err(e) => {
            held.remove(&e.id());
            tracing::error!(error = %e, "batch task failed");
        }
    }
}
