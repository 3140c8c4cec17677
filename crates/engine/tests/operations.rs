//! Operations (cancel, pause/resume, retry), batch stages, circuit breaking, graceful
//! shutdown, wakeups, leadership and the read API, against every backend.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use common::{TestDb, claim, count, eventually, run_with_items, stopper};
use idempipe_engine::{
    BatchHandler, Clock, Handler, HandlerError, ItemResult, ItemStatus, Job, LimiterConfig,
    NewItem, RunStatus, StagePolicy, SystemClock, Worker, WorkerConfig,
};
use serde_json::json;

fn config(concurrency: usize, poll: Duration) -> WorkerConfig {
    WorkerConfig {
        name: format!("w-{}", fastrand::u32(..)),
        concurrency,
        claim_batch: 64,
        poll_interval: poll,
        shutdown_grace: Duration::from_millis(300),
        ..WorkerConfig::default()
    }
}

/// Waits until cancelled, counting how many handlers noticed.
#[derive(Clone, Default)]
struct UntilCancelled(Arc<AtomicUsize>);

#[async_trait]
impl Handler for UntilCancelled {
    async fn handle(&self, job: &Job) -> ItemResult {
        job.cancelled().await;
        self.0.fetch_add(1, Ordering::SeqCst);
        Err(HandlerError::transient("stopped"))
    }
}

/// Cancel: pending and running items become cancelled, running handlers are told to stop
/// (at their next heartbeat), and nothing of the run is claimed again.
async fn cancel_stops_running_handlers(db: TestDb) {
    let store = db.store().await;
    let run = run_with_items(&*store, "s", 10, SystemClock.now()).await;
    let noticed = UntilCancelled::default();
    let policy = StagePolicy::new("s").lease(Duration::from_millis(300));
    let worker = Worker::new(store.clone(), config(4, Duration::from_millis(20)))
        .handler(policy, noticed.clone());
    let (stop, stopped) = stopper();
    let handle = tokio::spawn(worker.run(stopped));
    eventually(Duration::from_secs(10), "4 running", || {
        let store = store.clone();
        async move { count(&*store, run, "running").await == 4 }
    })
    .await;
    assert_eq!(store.run_cancel(run, SystemClock.now()).await.unwrap(), 10);
    eventually(Duration::from_secs(10), "handlers told to stop", || {
        let n = noticed.0.clone();
        async move { n.load(Ordering::SeqCst) == 4 }
    })
    .await;
    assert_eq!(count(&*store, run, "cancelled").await, 10);
    assert_eq!(
        store.run_get(run).await.unwrap().status,
        RunStatus::Cancelled
    );
    // A while longer: nothing of the cancelled run is claimed again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.send(true).unwrap();
    handle.await.unwrap().unwrap();
    assert_eq!(
        count(&*store, run, "cancelled").await,
        10,
        "late outcomes did not overwrite"
    );
}

/// Pause and resume a run or one stage: nothing is claimed while paused.
async fn pause_and_resume(db: TestDb) {
    let store = db.store().await;
    let items = vec![
        NewItem::new("a", "1", json!(null)),
        NewItem::new("b", "1", json!(null)),
    ];
    let run = store
        .run_create(
            &idempipe_engine::store::RunCreate {
                pipeline: "t".into(),
                fingerprint: "p".into(),
                input: "-".into(),
                params: json!({}),
                items,
            },
            0,
        )
        .await
        .unwrap();
    store.run_pause(run, None, true).await.unwrap();
    assert!(claim(&*store, "a", 1, 0, 1_000).await.1.is_empty());
    store.run_pause(run, None, false).await.unwrap();
    store.run_pause(run, Some("a"), true).await.unwrap();
    assert!(
        claim(&*store, "a", 1, 0, 1_000).await.1.is_empty(),
        "stage a paused"
    );
    assert_eq!(
        claim(&*store, "b", 1, 0, 1_000).await.1.len(),
        1,
        "stage b not paused"
    );
    store.run_pause(run, Some("a"), false).await.unwrap();
    assert_eq!(claim(&*store, "a", 1, 0, 1_000).await.1.len(), 1);
    assert!(matches!(
        store.run_pause(999_999, None, true).await,
        Err(idempipe_engine::StoreError::NotFound { .. })
    ));
}

/// Handles items of a batch stage, recording batch sizes; item 3 fails on its own.
#[derive(Clone, Default)]
struct Batches(Arc<std::sync::Mutex<Vec<usize>>>);

#[async_trait]
impl BatchHandler for Batches {
    async fn handle_batch(&self, jobs: &[Job]) -> Vec<ItemResult> {
        self.0.lock().unwrap().push(jobs.len());
        jobs.iter()
            .map(|j| {
                if j.key == "item/00003" {
                    Err(HandlerError::permanent("bad frame"))
                } else {
                    Ok(json!(j.key))
                }
            })
            .collect()
    }
}

/// A batch stage takes up to K items per call, and each item completes or fails alone.
async fn batch_stage_items_complete_alone(db: TestDb) {
    let store = db.store().await;
    let run = run_with_items(&*store, "frames", 100, SystemClock.now()).await;
    let batches = Batches::default();
    let worker = Worker::new(store.clone(), config(2, Duration::from_millis(20)))
        .batch_handler(StagePolicy::new("frames").batch_size(32), batches.clone());
    let (stop, stopped) = stopper();
    let handle = tokio::spawn(worker.run(stopped));
    eventually(Duration::from_secs(10), "all processed", || {
        let store = store.clone();
        async move {
            count(&*store, run, "completed").await == 99 && count(&*store, run, "dead").await == 1
        }
    })
    .await;
    stop.send(true).unwrap();
    handle.await.unwrap().unwrap();
    let sizes = batches.0.lock().unwrap().clone();
    assert_eq!(sizes.iter().sum::<usize>(), 100);
    assert!(
        sizes.iter().all(|s| *s <= 32) && sizes.contains(&32),
        "{sizes:?}"
    );
}

/// Always fails transiently.
#[derive(Clone, Default)]
struct Down(Arc<AtomicUsize>);

#[async_trait]
impl Handler for Down {
    async fn handle(&self, _job: &Job) -> ItemResult {
        self.0.fetch_add(1, Ordering::SeqCst);
        Err(HandlerError::transient("503 service unavailable"))
    }
}

/// Repeated transient failures open the limiter's circuit: items stay pending instead of
/// every one of them burning its attempts.
async fn circuit_opens_instead_of_burning_attempts(db: TestDb) {
    let store = db.store().await;
    let now = SystemClock.now();
    store
        .limiter_define(
            &LimiterConfig::new("api", 1000.0).circuit(3, Duration::from_secs(60)),
            now,
        )
        .await
        .unwrap();
    let run = run_with_items(&*store, "call", 50, now).await;
    let down = Down::default();
    let policy = StagePolicy::new("call")
        .limiter("api", 1.0)
        .max_attempts(10);
    let worker = Worker::new(store.clone(), config(1, Duration::from_millis(20)))
        .handler(policy, down.clone());
    let (stop, stopped) = stopper();
    let handle = tokio::spawn(worker.run(stopped));
    eventually(Duration::from_secs(20), "the circuit opened", || {
        let store = store.clone();
        async move { store.limiter_get("api").await.unwrap().circuit_opens == 1 }
    })
    .await;
    // A while longer: the open circuit lets no call through.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.send(true).unwrap();
    handle.await.unwrap().unwrap();
    let calls = down.0.load(Ordering::SeqCst);
    assert_eq!(calls, 3, "the circuit opened after 3 failures");
    let state = store.limiter_get("api").await.unwrap();
    assert_eq!(state.circuit_opens, 1);
    assert!(state.circuit_open_until > SystemClock.now());
    assert_eq!(
        count(&*store, run, "pending").await + count(&*store, run, "failed").await,
        50
    );
    assert_eq!(count(&*store, run, "dead").await, 0);
}

/// Never returns.
struct Forever;

#[async_trait]
impl Handler for Forever {
    async fn handle(&self, _job: &Job) -> ItemResult {
        std::future::pending().await
    }
}

/// Graceful shutdown: after the grace period, items that never started an outside call go
/// back to pending without using up an attempt.
async fn shutdown_releases_unfinished_items(db: TestDb) {
    let store = db.store().await;
    let run = run_with_items(&*store, "s", 3, SystemClock.now()).await;
    let worker = Worker::new(store.clone(), config(3, Duration::from_millis(20)))
        .handler(StagePolicy::new("s"), Forever);
    // Stop once all three are held, however slow the machine is.
    let watcher = store.clone();
    let all_running = async move {
        eventually(Duration::from_secs(30), "all three items running", || {
            let store = watcher.clone();
            async move { count(&*store, run, "running").await == 3 }
        })
        .await;
    };
    let stats = worker.run(all_running).await.unwrap();
    assert_eq!(stats.snapshot()[5], 3, "released");
    assert_eq!(count(&*store, run, "pending").await, 3);
    let item = store.item_get(run, "s", "item/00000").await.unwrap();
    assert_eq!(item.attempts, 0);
}

/// A worker with a long poll interval still picks up new work at once: PostgreSQL by
/// LISTEN/NOTIFY from another connection pool (as from another process), SQLite by the
/// in-process wakeup.
async fn new_work_wakes_idle_workers(db: TestDb) {
    let store = db.store().await;
    let run = run_with_items(&*store, "s", 0, SystemClock.now()).await;
    let worker_store = if db.backend == "postgres" {
        db.store().await
    } else {
        store.clone()
    };
    #[derive(Clone)]
    struct Done;
    #[async_trait]
    impl Handler for Done {
        async fn handle(&self, _job: &Job) -> ItemResult {
            Ok(json!(null))
        }
    }
    let worker = Worker::new(worker_store, config(2, Duration::from_secs(60)))
        .handler(StagePolicy::new("s"), Done);
    let handle = tokio::spawn(worker.run(tokio::time::sleep(Duration::from_secs(20))));
    tokio::time::sleep(Duration::from_millis(500)).await; // the worker is idle now
    let inserted_at = std::time::Instant::now();
    store
        .item_insert(
            run,
            &[NewItem::new("s", "late", json!(null))],
            SystemClock.now(),
        )
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "late item completed", || {
        let store = store.clone();
        async move { count(&*store, run, "completed").await == 1 }
    })
    .await;
    assert!(
        inserted_at.elapsed() < Duration::from_secs(10),
        "woken, not polled after 60 s"
    );
    handle.abort();
}

/// Links of a chain: each item of stage `a` spawns the next link in `b` and back, so
/// every link is work that commits while the worker may be busy claiming.
#[derive(Clone)]
struct Relay(usize);

#[async_trait]
impl Handler for Relay {
    async fn handle(&self, job: &Job) -> ItemResult {
        let n: usize = job.key.parse().unwrap();
        if n + 1 < self.0 {
            let next = if job.stage == "a" { "b" } else { "a" };
            job.spawn(NewItem::new(next, (n + 1).to_string(), json!(null)));
        }
        Ok(json!(null))
    }
}

/// Work handed from stage to stage never waits for the poll: a wakeup sent while the
/// worker's claim was in flight (the claim came back empty just before the new work
/// committed) is kept for its next wait. With a `Notify` that only woke current
/// waiters, such a link slept until the 60 s poll.
async fn handoffs_between_stages_never_wait_for_the_poll(db: TestDb) {
    const LINKS: usize = 60;
    let store = db.store().await;
    let run = run_with_items(&*store, "a", 0, SystemClock.now()).await;
    let worker = Worker::new(store.clone(), config(2, Duration::from_secs(60)))
        .handler(StagePolicy::new("a"), Relay(LINKS))
        .handler(StagePolicy::new("b"), Relay(LINKS));
    let handle = tokio::spawn(worker.run(tokio::time::sleep(Duration::from_secs(120))));
    store
        .item_insert(
            run,
            &[NewItem::new("a", "0", json!(null))],
            SystemClock.now(),
        )
        .await
        .unwrap();
    eventually(Duration::from_secs(50), "every link completed", || {
        let store = store.clone();
        async move { count(&*store, run, "completed").await == LINKS as i64 }
    })
    .await;
    handle.abort();
}

/// Read API: counts by stage and status (waiting shown apart), attempts, throughput.
async fn read_api_reports_progress(db: TestDb) {
    let store = db.store().await;
    let items = vec![
        NewItem::new("a", "1", json!(null)).in_group("g"),
        NewItem::new("a", "2", json!(null)).in_group("g"),
        NewItem::new("b", "join", json!(null)).after_group("g"),
    ];
    let run = store
        .run_create(
            &idempipe_engine::store::RunCreate {
                pipeline: "t".into(),
                fingerprint: "r".into(),
                input: "-".into(),
                params: json!({}),
                items,
            },
            1_000,
        )
        .await
        .unwrap();
    let (token, claimed) = claim(&*store, "a", 1, 1_000, 5_000).await;
    let outcome = idempipe_engine::store::Outcome {
        item_id: claimed[0].id,
        lease_token: token,
        kind: idempipe_engine::store::OutcomeKind::Completed(json!({"ok": true})),
        spawns: vec![],
    };
    idempipe_engine::store::record_one(&*store, outcome, 2_000)
        .await
        .unwrap();
    let counts: Vec<(String, String, i64)> = store
        .item_counts(run)
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.stage, c.status, c.count))
        .collect();
    assert_eq!(
        counts,
        [
            ("a".into(), "completed".into(), 1),
            ("a".into(), "pending".into(), 1),
            ("b".into(), "waiting".into(), 1)
        ]
    );
    let t = store
        .stage_throughput(run, "a", 10_000, 3_000)
        .await
        .unwrap();
    assert_eq!((t.completed_in_window, t.remaining), (1, 1));
    assert!((t.per_second - 0.1).abs() < 1e-9);
    assert_eq!(t.eta_seconds, Some(10.0));
    let attempts = store.attempt_list(claimed[0].id).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(
        (
            attempts[0].started_at,
            attempts[0].ended_at,
            attempts[0].outcome.as_str()
        ),
        (1_000, 2_000, "completed")
    );
    let runs = store.run_list(10).await.unwrap();
    assert_eq!(runs[0].id, run);
    assert!(store.run_find("t", "r").await.unwrap().is_some());
    let items = store
        .item_list(&idempipe_engine::store::ItemFilter {
            run_id: run,
            statuses: vec![ItemStatus::Completed],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].result, Some(json!({"ok": true})));
}

/// Maintenance leadership: one leader at a time; when the leader's connection dies,
/// another process takes over (SQLite: every process may run maintenance).
async fn leadership_moves_when_the_leader_dies(db: TestDb) {
    let a = db.store().await;
    let b = db.store().await;
    assert!(a.leader_try_acquire().await.unwrap());
    if db.backend == "sqlite" {
        assert!(b.leader_try_acquire().await.unwrap());
        return;
    }
    assert!(
        a.leader_try_acquire().await.unwrap(),
        "the leader stays leader"
    );
    // Other test binaries may hold the (database-wide) lock too; only our pair is checked.
    assert!(!b.leader_try_acquire().await.unwrap(), "only one leader");
    // The leader dies: its session is killed, as when its process or machine goes away.
    let admin = sqlx::PgPool::connect(&common::pg_admin_url())
        .await
        .unwrap();
    // Only the leader lock's holders (its 64-bit key is split into classid and objid):
    // other tests' sessions, such as one migrating under its own advisory lock, live on.
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
         AND objsubid = 1 AND (classid::bigint << 32) | objid::bigint = $1",
    )
    .bind(0x6964_656d_7069_7065_i64)
    .execute(&admin)
    .await
    .unwrap();
    eventually(Duration::from_secs(10), "b takes over", || {
        let b = b.clone();
        async move { b.leader_try_acquire().await.unwrap() }
    })
    .await;
    assert!(
        !a.leader_try_acquire().await.unwrap(),
        "the old leader knows it lost"
    );
}

/// Panics on its first attempt.
struct PanicsOnce;

#[async_trait]
impl Handler for PanicsOnce {
    async fn handle(&self, job: &Job) -> ItemResult {
        if job.attempt == 1 {
            panic!("bug in handler for {}", job.key);
        }
        Ok(json!("second time lucky"))
    }
}

/// A panicking handler costs one attempt, recorded at once with the panic message, not a
/// lease expiry.
async fn handler_panic_is_a_failed_attempt(db: TestDb) {
    let store = db.store().await;
    let run = run_with_items(&*store, "s", 1, SystemClock.now()).await;
    let policy = StagePolicy::new("s")
        .lease(Duration::from_secs(600))
        .backoff(idempipe_engine::Backoff {
            base: Duration::from_millis(1),
            cap: Duration::from_millis(1),
            jitter: 0.0,
        });
    let worker = Worker::new(store.clone(), config(1, Duration::from_millis(20)))
        .handler(policy, PanicsOnce);
    let handle = tokio::spawn(worker.run(tokio::time::sleep(Duration::from_secs(5))));
    eventually(
        Duration::from_secs(5),
        "completed on the second attempt",
        || {
            let store = store.clone();
            async move { count(&*store, run, "completed").await == 1 }
        },
    )
    .await;
    handle.abort();
    let item = store.item_get(run, "s", "item/00000").await.unwrap();
    let attempts = store.attempt_list(item.id).await.unwrap();
    assert_eq!(attempts[0].outcome, "failed");
    assert_eq!(attempts[0].error.as_ref().unwrap()["kind"], "panic");
    assert!(
        attempts[0].error.as_ref().unwrap()["message"]
            .as_str()
            .unwrap()
            .contains("bug in handler")
    );
}

backend_tests!(
    cancel_stops_running_handlers,
    pause_and_resume,
    batch_stage_items_complete_alone,
    circuit_opens_instead_of_burning_attempts,
    shutdown_releases_unfinished_items,
    new_work_wakes_idle_workers,
    handoffs_between_stages_never_wait_for_the_poll,
    read_api_reports_progress,
    leadership_moves_when_the_leader_dies,
    handler_panic_is_a_failed_attempt,
);
