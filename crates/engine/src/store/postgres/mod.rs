//! PostgreSQL backend: many workers on many machines.
//!
//! Claims use `FOR UPDATE SKIP LOCKED`; commits that make work due send `NOTIFY` and a
//! listener task wakes this process's workers; maintenance leadership is a session-level
//! advisory lock held on a dedicated connection, released by PostgreSQL when the leader's
//! connection dies, so another process takes over.

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool, Postgres};
use std::str::FromStr;
use std::sync::{Arc, LazyLock};
use tokio::sync::Mutex;

use crate::store::work_signal::WorkSignal;

use crate::store::migrate::Migration;
use crate::store::queries::Queries;
use crate::store::shared::impl_store;

#[cfg(test)]
mod plan_tests;

const BACKEND: &str = "postgres";
/// Every statement is its own transaction; claims and heartbeats need no BEGIN/COMMIT.
const SINGLE_STATEMENT_IS_ATOMIC: bool = true;
/// Outcomes and the next claim commit together (`Store::claims_with_outcomes`): each
/// session counts on its own `stage_counts` shard, so the two statements' counter rows are
/// locked by no other open transaction, in whatever order they take them.
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

/// The NOTIFY channel (also in queries.sql `notify`).
const CHANNEL: &str = "idempipe_work";
/// Advisory lock key of the maintenance leader ("idempipe" in ASCII).
const LEADER_LOCK_KEY: i64 = 0x6964_656d_7069_7065;
/// Connections per process: claims, completions, heartbeats and limiter calls in flight.
const POOL_SIZE: u32 = 10;

/// Server-side keepalives of every session. A process that crashes drops its connections,
/// and the server releases what they held (row locks of an open transaction, the
/// leader's advisory lock). One cut off by a network partition keeps its sessions open on
/// the server until TCP gives up, hours by default, and with them its locks: every other
/// worker waited on a limiter row it had locked, and nobody took over maintenance. With
/// these the server drops such sessions about 5 s after the process stops answering.
const SERVER_KEEPALIVE: [(&str, &str); 4] = [
    ("tcp_keepalives_idle", "2"),
    ("tcp_keepalives_interval", "1"),
    ("tcp_keepalives_count", "3"),
    ("tcp_user_timeout", "5000"),
];
/// How long the first connection may take before the server counts as unreachable.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A store in a PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    local_wake: WorkSignal,
    leader_conn: Arc<Mutex<Option<PoolConnection<Postgres>>>>,
    _listener: Arc<ListenerTask>,
}

/// The LISTEN task, stopped when the last clone of its store is dropped (it holds a
/// session and a handle on the pool: left running, a dropped store kept its sessions).
#[derive(Debug)]
struct ListenerTask(tokio::task::AbortHandle);

impl Drop for ListenerTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl PgStore {
    /// Connects to `url` and starts the LISTEN task. Does not migrate. TLS follows the
    /// URL's `sslmode` (`disable`, `prefer` (the default), `require`, `verify-ca`,
    /// `verify-full`) and `sslrootcert` (a PEM file; else the system's roots). An
    /// unreachable server fails within [`CONNECT_TIMEOUT`] with its cause.
    pub async fn connect(url: &str) -> Result<Self, crate::error::StoreError> {
        let options = PgConnectOptions::from_str(url)?.options(SERVER_KEEPALIVE);
        probe(&options).await?;
        // No ping before each use: a round trip per statement; a connection that broke
        // fails its statement, and the pool replaces it.
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .test_before_acquire(false)
            .connect_with(options)
            .await?;
        let local_wake = WorkSignal::new();
        let listener = spawn_listener(pool.clone(), local_wake.clone());
        Ok(Self {
            pool,
            local_wake,
            leader_conn: Arc::new(Mutex::new(None)),
            _listener: Arc::new(ListenerTask(listener)),
        })
    }

    /// The connection pool (for tests and tools that query directly).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, Postgres>, sqlx::Error> {
        self.pool.begin().await
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

/// Opens and closes one connection, so that a refused or failed connection is reported
/// with its cause at once: the pool retries a refused connection until its acquire
/// timeout and then says only "pool timed out".
async fn probe(options: &PgConnectOptions) -> Result<(), crate::error::StoreError> {
    let target = match options.get_socket() {
        Some(socket) => socket.display().to_string(),
        None => format!("{}:{}", options.get_host(), options.get_port()),
    };
    let fail = |detail: String| crate::error::StoreError::Connect {
        target: target.clone(),
        detail,
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(options)).await {
        Err(_) => Err(fail(format!(
            "no answer within {} s (check the host, port and firewall)",
            CONNECT_TIMEOUT.as_secs()
        ))),
        Ok(Err(e)) => Err(fail(connect_detail(&e))),
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            Ok(())
        }
    }
}

/// The root cause of a failed connection, once, with a hint where one helps.
fn connect_detail(e: &sqlx::Error) -> String {
    use std::io::ErrorKind;
    let text = match e {
        sqlx::Error::Io(io) if io.kind() == ErrorKind::ConnectionRefused => {
            return "connection refused (is PostgreSQL running there? check --db)".into();
        }
        sqlx::Error::Io(io) if io.kind() == ErrorKind::NotFound => {
            return format!("{io} (check the socket path in --db)");
        }
        sqlx::Error::Io(io) => crate::error::chain(io),
        sqlx::Error::Tls(cause) => crate::error::chain(cause.as_ref()),
        other => crate::error::chain(other),
    };
    // rustls errors reach sqlx as `Tls` or as an I/O error, depending on the phase.
    let tls = matches!(e, sqlx::Error::Tls(_))
        || ["certificate", "TLS", "tls", "handshake"]
            .iter()
            .any(|w| text.contains(w));
    if tls {
        format!("TLS failed: {text} (check sslmode= and sslrootcert= in the URL)")
    } else {
        text
    }
}

/// Forwards NOTIFYs to this process's workers; reconnects after errors.
fn spawn_listener(pool: PgPool, wake: WorkSignal) -> tokio::task::AbortHandle {
    tokio::spawn(async move {
        loop {
            match PgListener::connect_with(&pool).await {
                Ok(mut listener) => {
                    if let Err(e) = listener.listen(CHANNEL).await {
                        tracing::warn!(error = %e, "LISTEN failed; retrying");
                    } else {
                        loop {
                            match listener.recv().await {
                                Ok(_) => wake.notify(),
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
    })
    .abort_handle()
}

/// Ids as one `bigint[]` parameter, matched with `= ANY` on the primary key.
fn bind_ids<'q>(query: Query<'q>, ids: &[i64]) -> Query<'q> {
    query.bind(ids.to_vec())
}

/// `item_record`'s parameters: one array per column (id, token, status, result, error,
/// next_at; JSON as text, SQL NULL for JSON null), then now.
fn bind_outcomes<'q>(
    query: Query<'q>,
    outcomes: &[crate::store::Outcome],
    now: Millis,
) -> Query<'q> {
    use crate::store::OutcomeKind;
    let n = outcomes.len();
    let mut ids = Vec::with_capacity(n);
    let mut tokens = Vec::with_capacity(n);
    let mut statuses: Vec<&'static str> = Vec::with_capacity(n);
    let mut results: Vec<Option<String>> = Vec::with_capacity(n);
    let mut errors: Vec<Option<String>> = Vec::with_capacity(n);
    let mut next_at: Vec<Option<i64>> = Vec::with_capacity(n);
    let text = |v: &serde_json::Value| (!v.is_null()).then(|| v.to_string());
    for o in outcomes {
        ids.push(o.item_id);
        tokens.push(o.lease_token);
        let (status, result, error, next) = match &o.kind {
            OutcomeKind::Completed(result) => ("completed", text(result), None, None),
            OutcomeKind::Failed { error, retry_at } => {
                ("failed", None, text(error), Some(*retry_at))
            }
            OutcomeKind::Dead(error) => ("dead", None, text(error), None),
        };
        statuses.push(status);
        results.push(result);
        errors.push(error);
        next_at.push(next);
    }
    query
        .bind(ids)
        .bind(tokens)
        .bind(statuses)
        .bind(results)
        .bind(errors)
        .bind(next_at)
        .bind(now)
}

impl_store!(PgStore, Postgres);
