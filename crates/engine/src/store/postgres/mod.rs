//! PostgreSQL backend: many workers on many machines.
//!
//! Claims use `FOR UPDATE SKIP LOCKED`; commits that make work due send `NOTIFY` and a
//! listener task wakes this process's workers; maintenance leadership is a session-level
//! advisory lock held on a dedicated connection, released by PostgreSQL when the leader's
//! connection dies, so another process takes over.

use std::sync::{Arc, LazyLock};

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgListener, PgPoolOptions};
use sqlx::{PgPool, Postgres};
use tokio::sync::{Mutex, Notify};

use crate::store::migrate::Migration;
use crate::store::queries::Queries;
use crate::store::shared::impl_store;

#[cfg(test)]
mod plan_tests;

const BACKEND: &str = "postgres";
/// Every statement is its own transaction; claims and heartbeats need no BEGIN/COMMIT.
const SINGLE_STATEMENT_IS_ATOMIC: bool = true;
static QUERIES: LazyLock<Queries> = LazyLock::new(|| Queries::parse(include_str!("queries.sql")));
static MIGRATIONS: &[Migration] = &[
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
];

/// The NOTIFY channel (also in queries.sql `notify`).
const CHANNEL: &str = "idempipe_work";
/// Advisory lock key of the maintenance leader ("idempipe" in ASCII).
const LEADER_LOCK_KEY: i64 = 0x6964_656d_7069_7065;
/// Connections per process: claims, completions, heartbeats and limiter calls in flight.
const POOL_SIZE: u32 = 10;

/// A store in a PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    local_wake: Arc<Notify>,
    leader_conn: Arc<Mutex<Option<PoolConnection<Postgres>>>>,
}

impl PgStore {
    /// Connects to `url` and starts the LISTEN task. Does not migrate.
    pub async fn connect(url: &str) -> Result<Self, crate::error::StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .connect(url)
            .await?;
        let local_wake = Arc::new(Notify::new());
        spawn_listener(pool.clone(), local_wake.clone());
        Ok(Self {
            pool,
            local_wake,
            leader_conn: Arc::new(Mutex::new(None)),
        })
    }

    /// The connection pool (for tests and tools that query directly).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, Postgres>, sqlx::Error> {
        self.pool.begin().await
    }

    async fn wait_for_work_impl(&self, timeout: std::time::Duration) {
        let _ = tokio::time::timeout(timeout, self.local_wake.notified()).await;
    }

    async fn leader_try_acquire_impl(&self) -> Result<bool, crate::error::StoreError> {
        let mut held = self.leader_conn.lock().await;
        if let Some(conn) = held.as_mut() {
            // Still leader while the session that holds the lock is alive.
            if sqlx::query("SELECT 1").execute(&mut **conn).await.is_ok() {
                return Ok(true);
            }
            *held = None;
        }
        let mut conn = self.pool.acquire().await?;
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(LEADER_LOCK_KEY)
            .fetch_one(&mut *conn)
            .await?;
        if got {
            // Keep the session (and so the lock) out of the pool for as long as we lead.
            *held = Some(conn);
        }
        Ok(got)
    }
}

/// Forwards NOTIFYs to this process's workers; reconnects after errors.
fn spawn_listener(pool: PgPool, wake: Arc<Notify>) {
    tokio::spawn(async move {
        loop {
            match PgListener::connect_with(&pool).await {
                Ok(mut listener) => {
                    if let Err(e) = listener.listen(CHANNEL).await {
                        tracing::warn!(error = %e, "LISTEN failed; retrying");
                    } else {
                        loop {
                            match listener.recv().await {
                                Ok(_) => wake.notify_waiters(),
                                Err(e) => {
                                    tracing::warn!(error = %e, "LISTEN connection lost; reconnecting");
                                    break;
                                }
                            }
                        }
                    }
                }
                Err(e) if pool.is_closed() => {
                    tracing::debug!(error = %e, "pool closed; listener stops");
                    return;
                }
                Err(e) => tracing::warn!(error = %e, "cannot open LISTEN connection"),
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    });
}

impl_store!(PgStore, Postgres);
