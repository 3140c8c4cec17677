//! SIGKILL against what the pipelined worker holds besides running handlers: items it
//! claimed ahead of its slots (prefetch), and an outcome waiting in its completer. The test
//! binary re-runs itself as the child worker (`crash_child` does nothing unless the parent
//! set IDEMPIPE_CRASH_URL).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use async_trait::async_trait;
use common::{TestDb, child_url, count, end_child_backends, eventually, run_with_items};
use idempipe_engine::store::ItemFilter;
use idempipe_engine::{
    Clock, Handler, ItemResult, ItemStatus, Job, Maintenance, MaintenanceConfig, StagePolicy,
    SystemClock, Worker, WorkerConfig,
};
use serde_json::json;

/// Lease of both stages: short, so the tests wait little for a dead worker's leases.
const LEASE: Duration = Duration::from_secs(3);

/// The label of the child worker's PostgreSQL connections.
const CHILD: &str = "crash-child";

/// Runs far longer than the tests: its items stay running until the kill.
struct Hold;

#[async_trait]
impl Handler for Hold {
    async fn handle(&self, _job: &Job) -> ItemResult {
        tokio::time::sleep(Duration::from_secs(600)).await;
        Ok(json!(null))
    }
}

/// Leaves a `called-KEY-PID` file, waits for a `go` file, then completes.
struct Gated(PathBuf);

#[async_trait]
impl Handler for Gated {
    async fn handle(&self, job: &Job) -> ItemResult {
        let pid = std::process::id();
        std::fs::write(self.0.join(called_file(&job.key, pid)), "").unwrap();
        while !self.0.join("go").exists() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(json!({ "pid": pid }))
    }
}

/// The file a call of item `key` in process `pid` leaves (keys hold slashes).
fn called_file(key: &str, pid: u32) -> String {
    format!("called-{}-{pid}", key.replace('/', "_"))
}

/// The workers of both tests: `hold` with 2 slots and 8 calls' worth of prefetch (whose
/// lease is the stage's, so they would expire with the running ones), `gated` with one slot.
fn worker(store: idempipe_engine::SharedStore, dir: &Path) -> Worker {
    let config = WorkerConfig {
        name: format!("crash-{}", std::process::id()),
        concurrency: 2,
        prefetch: 8,
        prefetch_ttl: Duration::from_secs(60),
        poll_interval: Duration::from_millis(20),
        shutdown_grace: Duration::from_secs(1),
        ..WorkerConfig::default()
    };
    Worker::new(store, config)
        .handler(StagePolicy::new("hold").lease(LEASE).max_attempts(1), Hold)
        .handler(
            StagePolicy::new("gated").lease(LEASE).max_attempts(3),
            Gated(dir.to_path_buf()),
        )
}

/// The child worker process: serves both stages until killed.
#[test]
fn crash_child() {
    let (Ok(url), Ok(dir)) = (
        std::env::var("IDEMPIPE_CRASH_URL"),
        std::env::var("IDEMPIPE_CRASH_DIR"),
    ) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let store = idempipe_engine::connect(&url).await.unwrap();
        worker(store, Path::new(&dir))
            .run(std::future::pending())
            .await
            .unwrap();
    });
}

/// Kills on drop, so a failing test leaves no worker behind.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_child(db: &TestDb) -> Killed {
    Killed(
        Command::new(std::env::current_exe().unwrap())
            .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
            .env("IDEMPIPE_CRASH_URL", child_url(db, CHILD))
            .env("IDEMPIPE_CRASH_DIR", db.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    )
}

fn maintenance(store: &idempipe_engine::SharedStore) -> Maintenance {
    Maintenance::new(store.clone(), MaintenanceConfig::default())
}

/// Items claimed ahead of the slots by a worker that is then SIGKILLed come back without
/// an attempt counted (they never started), while the items whose handlers ran count theirs:
/// with one attempt allowed, those two go dead and the prefetched ones stay pending.
async fn prefetched_items_of_a_killed_worker_come_back_uncounted(db: TestDb) {
    let store = db.store().await;
    let run = run_with_items(&*store, "hold", 30, SystemClock.now()).await;
    let mut child = spawn_child(&db);
    // 2 running handlers + 8 prefetched items.
    eventually(Duration::from_secs(30), "10 items held", || {
        let store = store.clone();
        async move { count(&*store, run, "running").await == 10 }
    })
    .await;
    child.0.kill().unwrap(); // SIGKILL
    child.0.wait().unwrap();
    let held = store
        .item_list(&ItemFilter {
            run_id: run,
            statuses: vec![ItemStatus::Running],
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        held.iter().all(|i| i.attempts == 1),
        "claims count: {held:?}"
    );
    let maintenance = maintenance(&store);
    eventually(Duration::from_secs(30), "leases lapsed and handled", || {
        let (store, maintenance) = (store.clone(), maintenance.clone());
        async move {
            maintenance.rescue_once().await.unwrap();
            count(&*store, run, "running").await == 0
        }
    })
    .await;
    assert_eq!(
        count(&*store, run, "dead").await,
        2,
        "the two started attempts count"
    );
    assert_eq!(count(&*store, run, "pending").await, 28);
    for item in held {
        let now = store.item_get(run, "hold", &item.key).await.unwrap();
        let attempts = store.attempt_list(item.id).await.unwrap();
        match now.status {
            ItemStatus::Dead => {
                assert_eq!(now.attempts, 1);
                assert_eq!(attempts.len(), 1, "{attempts:?}");
                assert_eq!(attempts[0].error.as_ref().unwrap()["kind"], "lease_expired");
            }
            ItemStatus::Pending => {
                assert_eq!(
                    now.attempts, 0,
                    "a prefetched item's attempt is not counted"
                );
                assert!(attempts.is_empty(), "no attempt recorded: {attempts:?}");
            }
            other => panic!("item {} is {other:?}", item.key),
        }
    }
}

/// Holds the database's write lock (SQLite) or the item's row lock (PostgreSQL), so a
/// completion waits in its worker's completer.
enum Lock {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

async fn lock(db: &TestDb, item_id: i64) -> Lock {
    use sqlx::Connection;
    if db.backend == "sqlite" {
        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.url))
            .await
            .unwrap();
        sqlx::raw_sql("BEGIN IMMEDIATE")
            .execute(&mut conn)
            .await
            .unwrap();
        Lock::Sqlite(conn)
    } else {
        let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
        let mut tx = pool.begin().await.unwrap();
        sqlx::query("SELECT id FROM items WHERE id = $1 FOR UPDATE")
            .bind(item_id)
            .execute(&mut *tx)
            .await
            .unwrap();
        Lock::Postgres(tx)
    }
}

/// After the child is killed: on PostgreSQL its backends outlive it (a statement blocked
/// on a lock would still commit once the lock goes), so they are terminated, as when a
/// host dies with its connections; then the lock is let go.
async fn unlock(db: &TestDb, lock: Lock) {
    match lock {
        Lock::Sqlite(mut conn) => {
            sqlx::raw_sql("ROLLBACK").execute(&mut conn).await.unwrap();
        }
        Lock::Postgres(tx) => {
            let ended = end_child_backends(db, CHILD).await;
            assert!(ended > 0, "the child's backends were found");
            tx.rollback().await.unwrap();
        }
    }
}

/// A handler returned, its outcome waits in the completer (the commit is held back by a
/// lock), and the worker is SIGKILLed: the outcome is lost with it, so the item is redone
/// exactly as the invariants say: the lapsed lease is a failed attempt (`lease_expired`),
/// the retry completes it, and it completes once.
async fn outcome_waiting_in_a_killed_workers_completer_is_redone_once(db: TestDb) {
    let store = db.store().await;
    let run = run_with_items(&*store, "gated", 1, SystemClock.now()).await;
    let key = store
        .item_list(&ItemFilter {
            run_id: run,
            ..Default::default()
        })
        .await
        .unwrap()[0]
        .key
        .clone();
    let mut child = spawn_child(&db);
    let child_pid = child.0.id();
    let called = |pid: u32| db.dir.join(&called_file(&key, pid));
    eventually(
        Duration::from_secs(30),
        "the child called the handler",
        || {
            let exists = called(child_pid).exists();
            async move { exists }
        },
    )
    .await;
    let item_id = store.item_get(run, "gated", &key).await.unwrap().id;
    let held = lock(&db, item_id).await;
    std::fs::write(db.dir.join("go"), "").unwrap();
    // The handler returns at once; its outcome cannot commit while the lock is held.
    tokio::time::sleep(Duration::from_millis(500)).await;
    child.0.kill().unwrap(); // SIGKILL
    child.0.wait().unwrap();
    unlock(&db, held).await;
    let item = store.item_get(run, "gated", &key).await.unwrap();
    assert_eq!(
        item.status,
        ItemStatus::Running,
        "the outcome died with its worker"
    );
    let maintenance = maintenance(&store);
    eventually(Duration::from_secs(30), "the lapsed lease rescued", || {
        let (store, maintenance) = (store.clone(), maintenance.clone());
        async move {
            maintenance.rescue_once().await.unwrap();
            count(&*store, run, "failed").await == 1
        }
    })
    .await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let second = tokio::spawn(worker(store.clone(), db.dir.path()).run(async {
        let _ = stopped.await;
    }));
    eventually(Duration::from_secs(30), "redone", || {
        let store = store.clone();
        async move { count(&*store, run, "completed").await == 1 }
    })
    .await;
    stop.send(()).unwrap();
    second.await.unwrap().unwrap();
    let item = store.item_get(run, "gated", &key).await.unwrap();
    assert_eq!(item.result, Some(json!({ "pid": std::process::id() })));
    assert!(called(std::process::id()).exists(), "called again here");
    let attempts = store.attempt_list(item.id).await.unwrap();
    let outcomes: Vec<(i64, &str)> = attempts
        .iter()
        .map(|a| (a.attempt, a.outcome.as_str()))
        .collect();
    assert_eq!(outcomes, [(1, "failed"), (2, "completed")], "{attempts:?}");
    assert_eq!(attempts[0].error.as_ref().unwrap()["kind"], "lease_expired");
}

backend_tests!(
    prefetched_items_of_a_killed_worker_come_back_uncounted,
    outcome_waiting_in_a_killed_workers_completer_is_redone_once
);
