//! SQLite backend: the embedded default, a single file in WAL mode.
//!
//! SQLite has one writer at a time; every write transaction starts with `BEGIN IMMEDIATE`
//! so that two processes never deadlock upgrading a read lock, and waits (busy timeout)
//! instead of failing when the other holds it. Within a process, write transactions share
//! one connection and queue for it, so they never sleep in SQLite's busy handler waiting
//! for each other. Workers in other processes poll; those in
//! this process are woken directly.
//!
//! The hot path (claims, outcomes, lease renewals, starts, marks, give-backs) does not go
//! through sqlx: it runs on a writer thread (`writer.rs`, `hot.rs`) that owns its own write
//! connection and commits whatever arrives at the same moment in one transaction, one
//! thread round trip per call instead of one per statement.

use std::str::FromStr;
use std::sync::LazyLock;

use crate::store::work_signal::WorkSignal;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool};

use crate::store::migrate::Migration;
use crate::store::queries::Queries;
// `impl_store!` (at the end) brings Millis, StoreResult, HotPath and the store types in.
use crate::store::shared::impl_store;

mod hot;
mod writer;

const BACKEND: &str = "sqlite";
/// A lone UPDATE in WAL mode can fail with SQLITE_BUSY_SNAPSHOT when another process
/// commits between its read and its write; `BEGIN IMMEDIATE` takes the write lock first.
const SINGLE_STATEMENT_IS_ATOMIC: bool = false;
/// Outcomes and claims share the writer thread's transaction (`hot.rs`).
const CLAIMS_WITH_OUTCOMES: bool = true;
static QUERIES: LazyLock<Queries> = LazyLock::new(|| Queries::parse(include_str!("queries.sql")));
pub(crate) static MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("migrations/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "lifecycle",
        sql: include_str!("migrations/0002_lifecycle.sql"),
    },
    Migration {
        version: 3,
        name: "progress",
        sql: include_str!("migrations/0003_progress.sql"),
    },
    Migration {
        version: 4,
        name: "lean",
        sql: include_str!("migrations/0004_lean.sql"),
    },
    Migration {
        version: 5,
        name: "shard_per_backend",
        sql: include_str!("migrations/0005_shard_per_backend.sql"),
    },
];

/// How long a writer waits for another process's write transaction before giving up.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// Readers run concurrently in WAL mode.
const POOL_SIZE: u32 = 4;

/// A store in one SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// The one connection write transactions use, so this process's writers queue here.
    writer: SqlitePool,
    /// The hot-path writer thread.
    hot: writer::Writer,
    local_wake: WorkSignal,
}

impl SqliteStore {
    /// Opens (creating if missing) the database file at `path`. Does not migrate.
    pub async fn open(path: &str) -> Result<Self, crate::error::StoreError> {
        Self::open_with(path, crate::store::OpenMode::CreateIfMissing).await
    }

    /// Opens the database file at `path`, creating it (and its directory) only in
    /// [`OpenMode::CreateIfMissing`](crate::store::OpenMode). Does not migrate.
    pub async fn open_with(
        path: &str,
        mode: crate::store::OpenMode,
    ) -> Result<Self, crate::error::StoreError> {
        let create = mode == crate::store::OpenMode::CreateIfMissing;
        if create
            && let Some(parent) = std::path::Path::new(path).parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(|e| {
                crate::error::StoreError::Config(format!(
                    "cannot create the directory of database {path:?}: {e}"
                ))
            })?;
        }
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))?
            .create_if_missing(create)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL in WAL mode: a power loss may drop the last commits but never corrupts.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        // No ping before each use: a local file connection does not go stale.
        let pool = SqlitePoolOptions::new()
            .max_connections(POOL_SIZE)
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await?;
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            // Writers queue for the connection: wait as long as for another process's lock.
            .acquire_timeout(BUSY_TIMEOUT)
            .connect_with(options)
            .await?;
        // After the sqlx connections: they create the file and put it in WAL mode.
        let hot = writer::Writer::start(path)?;
        Ok(Self {
            pool,
            writer,
            hot,
            local_wake: WorkSignal::new(),
        })
    }

    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, Sqlite>, sqlx::Error> {
        self.writer.begin_with("BEGIN IMMEDIATE").await
    }

    /// Maintenance is idempotent and SQLite serialises writers, so every process may run it.
    async fn leader_try_acquire_impl(&self) -> Result<bool, crate::error::StoreError> {
        Ok(true)
    }
}

#[async_trait::async_trait]
impl HotPath for SqliteStore {
    async fn hot_claim(&self, p: &ClaimParams) -> Option<StoreResult<Vec<ClaimedItem>>> {
        let p = p.clone();
        Some(self.hot.call(move |c| hot::claim(c, &p)).await)
    }

    async fn hot_record(
        &self,
        outcomes: &[Outcome],
        now: Millis,
    ) -> Option<StoreResult<Vec<bool>>> {
        let input = hot::RecordInput::new(outcomes);
        let done = self.hot.call(move |c| hot::record(c, &input, now)).await;
        Some(done.map(|done| {
            if done.wake {
                self.local_wake.notify();
            }
            done.flags
        }))
    }

    async fn hot_record_and_claim(
        &self,
        outcomes: &[Outcome],
        now: Millis,
        claim: &ClaimParams,
    ) -> Option<StoreResult<(Vec<bool>, Vec<ClaimedItem>)>> {
        let input = hot::RecordInput::new(outcomes);
        let claim = claim.clone();
        let done = self
            .hot
            .call(move |c| Ok((hot::record(c, &input, now)?, hot::claim(c, &claim)?)))
            .await;
        Some(done.map(|(done, claimed)| {
            if done.wake {
                self.local_wake.notify();
            }
            (done.flags, claimed)
        }))
    }

    async fn hot_heartbeat(
        &self,
        ids: &[i64],
        token: i64,
        expires: Millis,
    ) -> Option<StoreResult<Vec<i64>>> {
        let ids = ids.to_vec();
        Some(
            self.hot
                .call(move |c| hot::heartbeat(c, &ids, token, expires))
                .await,
        )
    }

    async fn hot_start(
        &self,
        ids: &[i64],
        ahead_token: i64,
        token: i64,
        expires: Millis,
    ) -> Option<StoreResult<Vec<i64>>> {
        let ids = ids.to_vec();
        Some(
            self.hot
                .call(move |c| hot::start(c, &ids, ahead_token, token, expires))
                .await,
        )
    }

    async fn hot_mark_many(
        &self,
        marks: &[(i64, i64)],
        now: Millis,
    ) -> Option<StoreResult<Vec<i64>>> {
        let marks = marks.to_vec();
        Some(self.hot.call(move |c| hot::mark_many(c, &marks, now)).await)
    }

    async fn hot_release(&self, ids: &[i64], token: i64, now: Millis) -> Option<StoreResult<u64>> {
        let ids = ids.to_vec();
        Some(
            self.hot
                .call(move |c| hot::release(c, &ids, token, now))
                .await,
        )
    }

    async fn hot_limiter_lease(
        &self,
        name: &str,
        cost: f64,
        successes: u32,
        unused: crate::limiter::Unused,
        now: Millis,
    ) -> Option<StoreResult<(Option<Permit>, LimiterState)>> {
        let owned = name.to_owned();
        let done = self
            .hot
            .call(move |c| hot::limiter_lease(c, &owned, cost, successes, unused, now))
            .await;
        Some(done.and_then(|found| found.ok_or_else(|| limiter_missing(name))))
    }

    async fn hot_limiter_acquire(
        &self,
        name: &str,
        cost: f64,
        holder: i64,
        hold_until: Millis,
        now: Millis,
    ) -> Option<StoreResult<Permit>> {
        let owned = name.to_owned();
        let done = self
            .hot
            .call(move |c| hot::limiter_acquire(c, &owned, cost, holder, hold_until, now))
            .await;
        Some(done.and_then(|found| found.ok_or_else(|| limiter_missing(name))))
    }

    async fn hot_limiter_release(
        &self,
        name: &str,
        holder: i64,
        feedback: LimiterFeedback,
        now: Millis,
    ) -> Option<StoreResult<()>> {
        let owned = name.to_owned();
        let done = self
            .hot
            .call(move |c| hot::limiter_release(c, &owned, holder, feedback, now))
            .await;
        Some(done.and_then(|found| found.then_some(()).ok_or_else(|| limiter_missing(name))))
    }
}

/// The error of a limiter call naming a limiter that does not exist.
fn limiter_missing(name: &str) -> crate::error::StoreError {
    crate::error::StoreError::NotFound {
        what: format!("limiter {name:?}"),
    }
}

/// Ids as the JSON array the SQLite statements read with `json_each`.
fn bind_ids<'q>(query: Query<'q>, ids: &[i64]) -> Query<'q> {
    query.bind(crate::store::shared::json_array(ids))
}

/// `item_record`'s parameters: the outcomes as one JSON array, then now.
fn bind_outcomes<'q>(
    query: Query<'q>,
    outcomes: &[crate::store::Outcome],
    now: Millis,
) -> Query<'q> {
    query
        .bind(crate::store::shared::record_param(outcomes))
        .bind(now)
}

impl_store!(SqliteStore, Sqlite);
