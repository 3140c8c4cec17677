//! The worker pipeline: a slot frees when its handler returns, while the outcome still
//! waits for its commit.

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::{TestDb, count, eventually, run_with_items};
use idempipe_engine::{
    Clock, Handler, ItemResult, ItemStatus, Job, StagePolicy, SystemClock, Worker, WorkerConfig,
};
use serde_json::json;
use tokio::sync::{Notify, mpsc};

/// Reports each start; the first item waits for `gate` before it returns.
struct Gated {
    started: mpsc::UnboundedSender<String>,
    gate: Arc<Notify>,
}

#[async_trait]
impl Handler for Gated {
    async fn handle(&self, job: &Job) -> ItemResult {
        self.started.send(job.key.clone()).unwrap();
        if job.key == "item/00000" {
            self.gate.notified().await;
        }
        Ok(json!(job.key))
    }
}

/// PostgreSQL only: there a row lock can hold one outcome's commit back while claims go
/// on (on SQLite every write waits for the same file lock, so nothing could proceed).
/// With one slot, the second item starts while the first one's outcome cannot commit yet;
/// once it can, both complete exactly once. The worker prefetches one item: without
/// prefetch a worker this small claims its next item in the commit of its outcomes
/// (`Store::claims_with_outcomes`), so a held outcome holds its next claim back too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slot_frees_when_the_handler_returns_not_when_its_outcome_commits() {
    let db = TestDb::postgres().await;
    let store = db.store().await;
    let run = run_with_items(&*store, "s", 2, SystemClock.now()).await;
    let (tx, mut started) = mpsc::unbounded_channel();
    let gate = Arc::new(Notify::new());
    let config = WorkerConfig {
        name: "pipeline".into(),
        concurrency: 1,
        claim_batch: 1,
        prefetch: 1,
        // Long enough that the prefetched unit never goes stale and back while the
        // test holds the first one (the stats below count every claim).
        prefetch_ttl: Duration::from_secs(60),
        poll_interval: Duration::from_millis(20),
        ..WorkerConfig::default()
    };
    let worker = Worker::new(store.clone(), config).handler(
        StagePolicy::new("s"),
        Gated {
            started: tx,
            gate: gate.clone(),
        },
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(worker.run(async move {
        let _ = stopped.await;
    }));
    let first = tokio::time::timeout(Duration::from_secs(10), started.recv())
        .await
        .expect("the first item starts")
        .unwrap();
    assert_eq!(first, "item/00000");

    // Hold the first item's row so its outcome cannot commit, then let its handler return.
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let mut lock = pool.begin().await.unwrap();
    sqlx::query("SELECT id FROM items WHERE run_id = $1 AND key = 'item/00000' FOR UPDATE")
        .bind(run)
        .fetch_one(&mut *lock)
        .await
        .unwrap();
    gate.notify_one();
    let second = tokio::time::timeout(Duration::from_secs(10), started.recv())
        .await
        .expect("the second item starts while the first outcome waits for its commit")
        .unwrap();
    assert_eq!(second, "item/00001");
    let item = store.item_get(run, "s", "item/00000").await.unwrap();
    assert_eq!(
        item.status,
        ItemStatus::Running,
        "the first outcome is not committed yet"
    );

    lock.rollback().await.unwrap();
    eventually(Duration::from_secs(10), "both completed", || {
        let store = store.clone();
        async move { count(&*store, run, "completed").await == 2 }
    })
    .await;
    stop.send(()).unwrap();
    let stats = handle.await.unwrap().unwrap();
    let [claimed, completed, failed, dead, lease_lost, released] = stats.snapshot();
    assert_eq!(
        (claimed, completed, failed, dead, lease_lost, released),
        (2, 2, 0, 0, 0, 0)
    );
    for key in ["item/00000", "item/00001"] {
        let item = store.item_get(run, "s", key).await.unwrap();
        assert_eq!((item.attempts, item.result), (1, Some(json!(key))));
    }
}
