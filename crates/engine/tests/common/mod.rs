//! Test harness: a fresh database per test on each backend, a factory for runs, and the
//! `backend_tests!` macro that instantiates every test once per backend.
#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use idempipe_engine::store::{ClaimParams, ClaimedItem, RunCreate};
use idempipe_engine::{NewItem, SharedStore, Store, connect};
use serde_json::json;

/// The PostgreSQL server tests use; CI runs one on this address.
pub fn pg_admin_url() -> String {
    std::env::var("IDEMPIPE_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

/// A database for one test: its URL and what to clean up.
pub struct TestDb {
    pub url: String,
    pub backend: &'static str,
    _dir: Option<TempDir>,
    schema: Option<String>,
}

impl Drop for TestDb {
    /// Drops the test's PostgreSQL schema (from a thread of its own: drop cannot await).
    fn drop(&mut self) {
        let Some(schema) = self.schema.take() else {
            return;
        };
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(pool) = sqlx::PgPool::connect(&pg_admin_url()).await {
                    let sql = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&pool).await;
                    pool.close().await;
                }
            });
        })
        .join();
    }
}

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "{prefix}-{}-{:08x}",
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl TestDb {
    /// A new SQLite file.
    pub fn sqlite() -> Self {
        let dir = TempDir::new("idempipe-test");
        let url = dir.0.join("state.db").display().to_string();
        Self {
            url,
            backend: "sqlite",
            _dir: Some(dir),
            schema: None,
        }
    }

    /// A new schema in the test PostgreSQL database. Fails loudly when PostgreSQL is not
    /// reachable: the PostgreSQL tests are never skipped.
    pub async fn postgres() -> Self {
        let admin = pg_admin_url();
        let schema = format!("t_{}_{:08x}", std::process::id(), fastrand::u32(..));
        let pool = sqlx::PgPool::connect(&admin).await.unwrap_or_else(|e| {
            panic!("PostgreSQL at {admin} is required for these tests (set IDEMPIPE_TEST_PG): {e}")
        });
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
        let sep = if admin.contains('?') { '&' } else { '?' };
        let url = format!("{admin}{sep}options=-c%20search_path%3D{schema}");
        Self {
            url,
            backend: "postgres",
            _dir: None,
            schema: Some(schema),
        }
    }

    /// Opens (and migrates) a store on this database.
    pub async fn store(&self) -> SharedStore {
        connect(&self.url).await.unwrap()
    }
}

/// Creates a run with `n` items of `stage`, keys `item/00000`...
pub async fn run_with_items(store: &dyn Store, stage: &str, n: usize, now: i64) -> i64 {
    let items = (0..n)
        .map(|i| NewItem::new(stage, format!("item/{i:05}"), json!({ "i": i })))
        .collect();
    store
        .run_create(
            &RunCreate {
                pipeline: "test".into(),
                fingerprint: format!("fp-{}", fastrand::u64(..)),
                input: "test input".into(),
                params: json!({}),
                items,
            },
            now,
        )
        .await
        .unwrap()
}

/// Claims up to `limit` items of `stage` with a fresh token.
pub async fn claim(
    store: &dyn Store,
    stage: &str,
    limit: i64,
    now: i64,
    lease_ms: i64,
) -> (i64, Vec<ClaimedItem>) {
    let token = fastrand::i64(1..i64::MAX);
    let items = store
        .item_claim(&ClaimParams {
            stage: stage.into(),
            limit,
            worker: "test".into(),
            lease_token: token,
            lease_expires_at: now + lease_ms,
            now,
        })
        .await
        .unwrap();
    (token, items)
}

/// Polls `check` until it returns true or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Count of items of a run in `status`.
pub async fn count(store: &dyn Store, run: i64, status: &str) -> i64 {
    store
        .item_counts(run)
        .await
        .unwrap()
        .iter()
        .filter(|c| c.status == status)
        .map(|c| c.count)
        .sum()
}

pub type Shared = Arc<dyn Store>;

/// Instantiates each listed `async fn name(db: TestDb)` once per backend.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(super::common::TestDb::sqlite()).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(super::common::TestDb::postgres().await).await
                }
            )*
        }
    };
}
