//! Test harness: a fresh database per test on each backend, a factory for runs, and the
//! `backend_tests!` macro that instantiates every test once per backend.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::time::Duration;

use idempipe_engine::store::{ClaimParams, ClaimedItem, RunCreate};
use idempipe_engine::{NewItem, Store};
use serde_json::json;

pub use idempipe_testkit::TestDb;
#[allow(unused_imports)]
pub use idempipe_testkit::pg_admin_url;

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
            run_id: None,
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

/// A stop signal for `Worker::run`: send `true` to stop the worker. Tests stop workers
/// once what they wait for happened, not on a timer a loaded machine could outrun.
pub fn stopper() -> (
    tokio::sync::watch::Sender<bool>,
    impl std::future::Future<Output = ()> + Send + 'static,
) {
    let (tx, mut rx) = tokio::sync::watch::channel(false);
    (tx, async move {
        let _ = rx.wait_for(|s| *s).await;
    })
}

/// The application name a child worker's PostgreSQL connections carry (`label` tells
/// the children of one test apart), so that [`end_child_backends`] can find them.
pub fn child_app_name(db: &TestDb, label: &str) -> String {
    let dir = db.dir.path().file_name().unwrap().to_string_lossy();
    format!("{label}-{dir}")
}

/// A child worker's store URL: on PostgreSQL tagged with [`child_app_name`].
pub fn child_url(db: &TestDb, label: &str) -> String {
    if db.backend == "postgres" {
        format!("{}&application_name={}", db.url, child_app_name(db, label))
    } else {
        db.url.clone()
    }
}

/// After a child worker is SIGKILLed: on PostgreSQL its backends outlive it, and a
/// statement it had sent still commits. Terminates them, as when a host dies with its
/// connections, and waits until they are gone, so the store no longer changes on the
/// dead child's behalf. Returns how many backends it found (0 on SQLite).
pub async fn end_child_backends(db: &TestDb, label: &str) -> usize {
    if db.backend != "postgres" {
        return 0;
    }
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let name = child_app_name(db, label);
    let found: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
    )
    .bind(&name)
    .fetch_all(&pool)
    .await
    .unwrap();
    eventually(Duration::from_secs(30), "the child's backends gone", || {
        let (pool, name) = (pool.clone(), name.clone());
        async move {
            let left: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
            )
            .bind(name)
            .fetch_one(&pool)
            .await
            .unwrap();
            left == 0
        }
    })
    .await;
    found.len()
}

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
