//! The store interface: the database is both the state and the queue.
//!
//! One trait, one module per backend ([`sqlite`], [`postgres`]). Both backends share the
//! statement flow (`shared.rs`); the SQL itself lives in each backend's `queries.sql`,
//! paired by name, with comments where the dialects differ.

mod hot_path;
pub(crate) mod location;
mod migrate;
pub mod postgres;
mod queries;
pub(crate) mod shared;
pub mod sqlite;
#[cfg(test)]
mod upgrade_tests;
mod work_signal;

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::clock::Millis;
use crate::error::{StoreError, StoreResult};
use crate::limiter::{LimiterConfig, LimiterFeedback, LimiterState, Permit, Unused};
use crate::model::{Attempt, Item, ItemStatus, NewItem, Run, RunActivity, StageCount};
use crate::policy::StagePolicy;

/// A store shared by the components of a process.
pub type SharedStore = Arc<dyn Store>;

/// Parameters of [`Store::run_create`].
#[derive(Debug, Clone)]
pub struct RunCreate {
    /// Pipeline name.
    pub pipeline: String,
    /// Identity of input and settings.
    pub fingerprint: String,
    /// Human description of the input.
    pub input: String,
    /// Parameters and metadata (JSON).
    pub params: Value,
    /// Items to create with the run.
    pub items: Vec<NewItem>,
}

/// Parameters of [`Store::item_claim`].
#[derive(Debug, Clone)]
pub struct ClaimParams {
    /// Stage to claim from.
    pub stage: String,
    /// Largest number of items to claim.
    pub limit: i64,
    /// Worker name recorded on the items.
    pub worker: String,
    /// Lease token fencing every later write of this attempt.
    pub lease_token: i64,
    /// Lease expiry of the claimed items.
    pub lease_expires_at: Millis,
    /// Now.
    pub now: Millis,
    /// Only items of this run (None: every run).
    pub run_id: Option<i64>,
}

/// A worker's liveness record (table `workers`), renewed by [`Store::worker_beat`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerPresence {
    /// Worker name (unique per process).
    pub name: String,
    /// Host it runs on.
    pub host: String,
    /// Its process id.
    pub pid: i64,
    /// The run it serves, or None for every run.
    pub run_id: Option<i64>,
    /// When it started.
    pub started_at: Millis,
    /// Its last heartbeat.
    pub last_seen_at: Millis,
    /// Until when it counts as alive without another heartbeat.
    pub alive_until: Millis,
}

/// An item handed to a worker by [`Store::item_claim`].
#[derive(Debug, Clone)]
pub struct ClaimedItem {
    /// Item id.
    pub id: i64,
    /// Run id.
    pub run_id: i64,
    /// Key.
    pub key: String,
    /// Payload.
    pub payload: Value,
    /// Attempt number of this claim.
    pub attempt: i64,
    /// Attempts counted against the stage's limit (attempts since the last manual retry).
    pub budget_used: i64,
}

/// What the worker records for one attempt.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Item id.
    pub item_id: i64,
    /// Lease token of the attempt; the write is fenced by it.
    pub lease_token: i64,
    /// What happened.
    pub kind: OutcomeKind,
    /// Items spawned by the handler; created only if a completion commits.
    pub spawns: Vec<NewItem>,
}

/// The result of one attempt.
#[derive(Debug, Clone)]
pub enum OutcomeKind {
    /// Completed with a result.
    Completed(Value),
    /// Failed; due again at the given time.
    Failed {
        /// Error detail.
        error: Value,
        /// When it is due again.
        retry_at: Millis,
    },
    /// Failed for good.
    Dead(Value),
}

/// Parameters of [`Store::item_retry`].
#[derive(Debug, Clone, Default)]
pub struct RetryParams {
    /// Run whose items are retried.
    pub run_id: i64,
    /// Only this stage, if set.
    pub stage: Option<String>,
    /// Statuses to revive (failed, dead, unknown).
    pub statuses: Vec<ItemStatus>,
}

/// Filter of [`Store::item_list`].
#[derive(Debug, Clone, Default)]
pub struct ItemFilter {
    /// Run.
    pub run_id: i64,
    /// Only this stage.
    pub stage: Option<String>,
    /// Only these statuses (all if empty).
    pub statuses: Vec<ItemStatus>,
    /// Largest number of rows.
    pub limit: i64,
    /// Skip items with id <= this (paging).
    pub after_id: i64,
}

/// What a maintenance pass found and fixed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RescueReport {
    /// Expired leases turned into a failed attempt (due again).
    pub retried: u64,
    /// Expired leases whose item went dead (attempts exhausted).
    pub dead: u64,
    /// Expired leases parked as unknown (outside call started, stage parks).
    pub unknown: u64,
}

/// Throughput of a stage over a recent window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Throughput {
    /// Items completed in the window.
    pub completed_in_window: i64,
    /// Window length in milliseconds.
    pub window_ms: Millis,
    /// Items per second.
    pub per_second: f64,
    /// Items not yet final.
    pub remaining: i64,
    /// Estimated seconds to finish at the current rate (None when the rate is zero).
    pub eta_seconds: Option<f64>,
}

/// The durable state of idempipe. Every method is one transaction; `now` is passed in so
/// time can be injected.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Backend name ("sqlite" or "postgres").
    fn backend(&self) -> &'static str;

    /// Applies the embedded migrations that are not applied yet.
    async fn migrate(&self) -> StoreResult<()>;

    /// The database's clock in ms since the epoch (PostgreSQL: the server's; SQLite, which
    /// has no server, the local clock). See [`crate::DatabaseClock`].
    async fn db_now(&self) -> StoreResult<Millis>;

    /// Records the stages' policies so that maintenance in any process can apply them.
    async fn stage_register(&self, policies: &[StagePolicy], now: Millis) -> StoreResult<()>;

    /// Creates a run and its initial items in one transaction.
    async fn run_create(&self, params: &RunCreate, now: Millis) -> StoreResult<i64>;
    /// One run.
    async fn run_get(&self, run_id: i64) -> StoreResult<Run>;
    /// The newest run of `pipeline` with `fingerprint`, if any.
    async fn run_find(&self, pipeline: &str, fingerprint: &str) -> StoreResult<Option<Run>>;
    /// The newest runs.
    async fn run_list(&self, limit: i64) -> StoreResult<Vec<Run>>;
    /// Stores the pipeline's summary of a run.
    async fn run_set_summary(&self, run_id: i64, summary: &Value) -> StoreResult<()>;
    /// Replaces a run's parameters (for settings that may change on an existing run).
    async fn run_set_params(&self, run_id: i64, params: &Value) -> StoreResult<()>;
    /// Cancels a run: every non-final item becomes cancelled (running handlers learn it at
    /// their next heartbeat). Returns the number of items cancelled. A finished run
    /// (completed, failed, cancelled) is refused with [`StoreError::RunFinished`].
    async fn run_cancel(&self, run_id: i64, now: Millis) -> StoreResult<u64>;
    /// Pauses or resumes a whole run (`stage` None) or one stage of it; a finished run is
    /// refused with [`StoreError::RunFinished`].
    async fn run_pause(&self, run_id: i64, stage: Option<&str>, paused: bool) -> StoreResult<()>;
    /// Marks runs whose items are all final as completed or failed; returns them.
    async fn run_finish_ready(
        &self,
        now: Millis,
    ) -> StoreResult<Vec<(i64, crate::model::RunStatus)>>;

    /// Inserts items into a running run (keys that exist are left alone).
    async fn item_insert(&self, run_id: i64, items: &[NewItem], now: Millis) -> StoreResult<u64>;
    /// Claims up to `limit` due items of a stage.
    async fn item_claim(&self, params: &ClaimParams) -> StoreResult<Vec<ClaimedItem>>;
    /// Extends leases; returns the ids still held (missing ones were lost or cancelled).
    async fn item_heartbeat(
        &self,
        ids: &[i64],
        lease_token: i64,
        lease_expires_at: Millis,
    ) -> StoreResult<Vec<i64>>;
    /// Marks the start of an outside call for the attempt holding `lease_token`.
    async fn item_mark_external(
        &self,
        item_id: i64,
        lease_token: i64,
        now: Millis,
    ) -> StoreResult<()>;
    /// Records outcomes; each is fenced by its lease token. Returns, per outcome, whether
    /// it is recorded (false: the lease was lost and nothing was written for it). Retrying
    /// a call whose commit happened although the caller saw an error (a dropped
    /// connection) writes nothing again and reports those outcomes as recorded.
    async fn item_record(&self, outcomes: &[Outcome], now: Millis) -> StoreResult<Vec<bool>>;
    /// Gives held items back without an outcome (graceful shutdown). Attempts that had not
    /// started an outside call do not count.
    async fn item_release(&self, ids: &[i64], lease_token: i64, now: Millis) -> StoreResult<u64>;
    /// Gives held items back without counting their attempt, due again at `until` (their
    /// limiter holds calls back until then). Items whose call started are left alone.
    async fn item_defer(
        &self,
        ids: &[i64],
        lease_token: i64,
        until: Millis,
        now: Millis,
    ) -> StoreResult<u64>;
    /// Rescues items whose lease expired, following each stage's policy.
    async fn item_rescue_expired(&self, now: Millis) -> StoreResult<RescueReport>;
    /// Makes the chosen items of a run due now; returns how many changed.
    async fn item_retry(&self, params: &RetryParams, now: Millis) -> StoreResult<u64>;
    /// Makes every finished item of `stages` of a run due again with a fresh attempt
    /// budget, keeping its attempt history: completed items become pending, and whoever
    /// waited for them (an item, or a group they belong to) waits again; failed, dead and
    /// unknown items are retried. A failed or completed run goes back to running; a
    /// cancelled run is refused. Returns how many items changed.
    async fn item_redo(&self, run_id: i64, stages: &[String], now: Millis) -> StoreResult<u64>;
    /// One item by stage and key.
    async fn item_get(&self, run_id: i64, stage: &str, key: &str) -> StoreResult<Item>;
    /// Items matching a filter, by id.
    async fn item_list(&self, filter: &ItemFilter) -> StoreResult<Vec<Item>>;
    /// Item counts of a run by stage and status.
    async fn item_counts(&self, run_id: i64) -> StoreResult<Vec<StageCount>>;
    /// Attempt history of an item, oldest first.
    async fn attempt_list(&self, item_id: i64) -> StoreResult<Vec<Attempt>>;
    /// Throughput and ETA of a stage over the last `window_ms`.
    async fn stage_throughput(
        &self,
        run_id: i64,
        stage: &str,
        window_ms: Millis,
        now: Millis,
    ) -> StoreResult<Throughput>;
    /// Deletes attempts and finished runs that ended before `before`; returns rows deleted.
    async fn history_prune(&self, before: Millis) -> StoreResult<u64>;

    /// Creates a limiter or updates its configuration (keeping its learned state).
    async fn limiter_define(&self, config: &LimiterConfig, now: Millis) -> StoreResult<()>;
    /// Tries to take `cost` units and, if the limiter caps concurrency, a slot held by
    /// `holder` until `hold_until` (a dead worker's slot frees itself then).
    async fn limiter_acquire(
        &self,
        name: &str,
        cost: f64,
        holder: i64,
        hold_until: Millis,
        now: Millis,
    ) -> StoreResult<Permit>;
    /// Gives back a concurrency slot and tells the limiter how the call went.
    async fn limiter_release(
        &self,
        name: &str,
        holder: i64,
        feedback: LimiterFeedback,
        now: Millis,
    ) -> StoreResult<()>;
    /// Current state of a limiter.
    async fn limiter_get(&self, name: &str) -> StoreResult<LimiterState>;
    /// All limiters.
    async fn limiter_list(&self) -> StoreResult<Vec<LimiterState>>;

    /// Signals that new work may be due (PostgreSQL: LISTEN/NOTIFY and in-process
    /// wakeups; SQLite: in-process wakeups). The receiver keeps a signal sent while its
    /// worker was busy, so `changed()` returns at once after it.
    fn work_signal(&self) -> tokio::sync::watch::Receiver<()>;
    /// Tries to become (or stay) the maintenance leader of this database.
    async fn leader_try_acquire(&self) -> StoreResult<bool>;

    /// Records that a worker is alive (inserting or renewing its row), and deletes the rows
    /// of workers stale since before `prune_before`.
    async fn worker_beat(&self, worker: &WorkerPresence, prune_before: Millis) -> StoreResult<()>;
    /// Deletes a worker's row (clean stop).
    async fn worker_forget(&self, name: &str) -> StoreResult<()>;
    /// The worker rows, live and stale (compare `alive_until` with now).
    async fn worker_list(&self) -> StoreResult<Vec<WorkerPresence>>;
    /// The activity of each of `run_ids` that is still `running` at `now`; other runs are
    /// left out.
    async fn run_activity(
        &self,
        run_ids: &[i64],
        now: Millis,
    ) -> StoreResult<Vec<(i64, RunActivity)>>;

    /// Takes a chunk of `cost` units of limiter `name` for a worker's local pool, in one
    /// transaction that first applies `successes` successful calls made with earlier
    /// chunks and gives back `unused` units of the earlier chunk that expired in the pool
    /// ([`LimiterState::give_back`]). Returns the permit and the state after it. The
    /// permit is None (and nothing is taken) when calls must take their permits one by
    /// one: the limiter caps concurrency, or its circuit is half-open (one probe call at
    /// a time); with `cost` 0 it only applies the successes and the units given back.
    async fn limiter_lease(
        &self,
        name: &str,
        cost: f64,
        successes: u32,
        unused: Unused,
        now: Millis,
    ) -> StoreResult<(Option<Permit>, LimiterState)>;

    /// Starts prefetched items: moves their lease from the claim-ahead token
    /// `ahead_token` (negative) to `lease_token` until `lease_expires_at`. Returns the ids
    /// started (missing ones were given back, rescued or cancelled meanwhile).
    async fn item_start(
        &self,
        ids: &[i64],
        ahead_token: i64,
        lease_token: i64,
        lease_expires_at: Millis,
    ) -> StoreResult<Vec<i64>>;
    /// Gives back prefetched items whose lease lapsed before their handler started (their
    /// worker died), without counting the attempt; returns how many.
    async fn item_return_unstarted(&self, now: Millis) -> StoreResult<u64>;
    /// [`Store::item_record`], then [`Store::item_claim`]; in one transaction where
    /// [`Store::claims_with_outcomes`] says so: a worker whose slots just freed then claims
    /// their next items in the commit of their outcomes (one commit per item at
    /// concurrency 1), and the claim happens only if the outcomes commit.
    async fn item_record_and_claim(
        &self,
        outcomes: &[Outcome],
        now: Millis,
        claim: &ClaimParams,
    ) -> StoreResult<(Vec<bool>, Vec<ClaimedItem>)>;
    /// Whether [`Store::item_record_and_claim`] is one transaction (both backends: on
    /// PostgreSQL each session counts on its own `stage_counts` shard, so a claim after a
    /// record in one transaction cannot deadlock with a plain claim on the counter rows).
    fn claims_with_outcomes(&self) -> bool;
    /// [`Store::item_mark_external`] for many `(item id, lease token)` attempts in one
    /// statement; returns the ids marked (missing ones lost their lease).
    async fn item_mark_external_many(
        &self,
        marks: &[(i64, i64)],
        now: Millis,
    ) -> StoreResult<Vec<i64>>;
}

/// Records one outcome; a lost lease becomes [`StoreError::LeaseLost`].
pub async fn record_one(store: &dyn Store, outcome: Outcome, now: Millis) -> StoreResult<()> {
    let item_id = outcome.item_id;
    let recorded = store.item_record(&[outcome], now).await?;
    if recorded.first().copied().unwrap_or(false) {
        Ok(())
    } else {
        Err(StoreError::LeaseLost { item_id })
    }
}

/// Whether opening a SQLite database may create its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Create the file (and its directory) when missing: commands that start work.
    CreateIfMissing,
    /// The database must exist: commands that only read or steer existing runs.
    /// A missing or empty SQLite file is [`StoreError::NoDatabase`]; nothing is created.
    MustExist,
}

/// Opens a store from a URL, creating a missing SQLite file: `postgres://...` /
/// `postgresql://...`, or a SQLite file as `sqlite://PATH`, a path ending in `.db`,
/// `.sqlite` or `.sqlite3`, or an existing SQLite file (anything else is
/// [`StoreError::BadUrl`]). Applies migrations.
pub async fn connect(url: &str) -> StoreResult<SharedStore> {
    connect_with(url, OpenMode::CreateIfMissing).await
}

/// [`connect`], with the choice of creating a missing SQLite file or not.
pub async fn connect_with(url: &str, mode: OpenMode) -> StoreResult<SharedStore> {
    let store: SharedStore = match location::locate(url)? {
        location::Location::Postgres(url) => Arc::new(postgres::PgStore::connect(&url).await?),
        location::Location::Sqlite(path) => {
            let path = path.to_string_lossy();
            if mode == OpenMode::MustExist
                && std::fs::metadata(&*path).map_or(true, |m| m.len() == 0)
            {
                return Err(StoreError::NoDatabase {
                    path: path.into_owned(),
                });
            }
            Arc::new(sqlite::SqliteStore::open_with(&path, mode).await?)
        }
    };
    store.migrate().await?;
    Ok(store)
}

/// The schema version this binary migrates databases to (its last embedded migration).
pub fn schema_version() -> i64 {
    sqlite::MIGRATIONS.last().map_or(0, |m| m.version)
}

#[cfg(test)]
mod schema_tests {
    #[test]
    fn both_backends_have_the_same_schema_versions() {
        let versions = |m: &[super::migrate::Migration]| {
            m.iter().map(|m| (m.version, m.name)).collect::<Vec<_>>()
        };
        assert_eq!(
            versions(super::sqlite::MIGRATIONS),
            versions(super::postgres::MIGRATIONS)
        );
        assert_eq!(
            super::schema_version(),
            super::sqlite::MIGRATIONS.len() as i64
        );
    }
}
