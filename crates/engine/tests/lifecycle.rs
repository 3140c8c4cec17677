//! Run lifecycle: a worker restricted to one run, run activity computed from leases and
//! worker heartbeats (with a real worker process killed by SIGKILL), and a shutdown that
//! gives interrupted attempts back without counting them.
//!
//! The test binary re-runs itself as the child worker (`child_worker` does nothing unless
//! the parent set IDEMPIPE_LIFECYCLE_CHILD_URL).

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use common::{TestDb, claim, count, eventually, run_with_items, stopper};
use idempipe_engine::store::{ItemFilter, WorkerPresence};
use idempipe_engine::{
    Clock, Handler, ItemResult, ItemStatus, Job, RunActivity, StagePolicy, SystemClock, Worker,
    WorkerConfig,
};
use serde_json::json;

/// Completes at once.
struct Quick;

#[async_trait]
impl Handler for Quick {
    async fn handle(&self, _job: &Job) -> ItemResult {
        Ok(json!({ "ok": true }))
    }
}

/// Holds its item for a long time, like an ffmpeg encode; counts its calls.
struct Long(Arc<AtomicU64>);

#[async_trait]
impl Handler for Long {
    async fn handle(&self, _job: &Job) -> ItemResult {
        self.0.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(600)).await;
        Ok(json!({ "slept": true }))
    }
}

/// Marks an outside call (and says so), then takes a moment to finish it.
struct External(Arc<std::sync::atomic::AtomicBool>);

#[async_trait]
impl Handler for External {
    async fn handle(&self, job: &Job) -> ItemResult {
        job.begin_external_call()
            .await
            .map_err(idempipe_engine::HandlerError::transient)?;
        self.0.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(400)).await;
        Ok(json!({ "called": true }))
    }
}

fn config(name: &str, run: Option<i64>) -> WorkerConfig {
    WorkerConfig {
        name: name.into(),
        concurrency: 4,
        claim_batch: 8,
        poll_interval: Duration::from_millis(20),
        shutdown_grace: Duration::from_secs(60),
        run,
        liveness_interval: Duration::from_millis(100),
        ..WorkerConfig::default()
    }
}

async fn activity(store: &dyn idempipe_engine::Store, run: i64, now: i64) -> Option<RunActivity> {
    store
        .run_activity(&[run], now)
        .await
        .unwrap()
        .into_iter()
        .find(|(id, _)| *id == run)
        .map(|(_, a)| a)
}

/// A worker restricted to one run completes that run and never claims an item of
/// another run that is due at the same time.
async fn worker_for_one_run_never_claims_another(db: TestDb) {
    let store = db.store().await;
    let now = SystemClock.now();
    let other = run_with_items(&*store, "s", 30, now - 1_000).await;
    let mine = run_with_items(&*store, "s", 30, now).await;
    let (stop, stopped) = stopper();
    let worker = Worker::new(store.clone(), config("one-run", Some(mine)))
        .handler(StagePolicy::new("s"), Quick);
    let handle = tokio::spawn(worker.run(stopped));
    eventually(Duration::from_secs(30), "its own run completed", || {
        let store = store.clone();
        async move { count(&*store, mine, "completed").await == 30 }
    })
    .await;
    // The other run's items were due first (older) and stayed due the whole time.
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.send(true).unwrap();
    handle.await.unwrap().unwrap();
    let others = store
        .item_list(&ItemFilter {
            run_id: other,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(others.len(), 30);
    for item in &others {
        assert_eq!(item.status, ItemStatus::Pending, "{item:?}");
        assert_eq!(item.attempts, 0, "{item:?}");
        assert!(item.worker.is_none(), "{item:?}");
    }
    // The claim itself filters: asking for the other run's items only returns those.
    let token = 42;
    let claimed = store
        .item_claim(&idempipe_engine::store::ClaimParams {
            stage: "s".into(),
            limit: 5,
            worker: "direct".into(),
            lease_token: token,
            lease_expires_at: now + 60_000,
            now: now + 1,
            run_id: Some(other),
        })
        .await
        .unwrap();
    assert_eq!(claimed.len(), 5);
    assert!(claimed.iter().all(|c| c.run_id == other));
}

/// Activity from the store's facts, with injected time: queued before any claim, running
/// while a lease or a live worker serving the run (or every run) exists, interrupted once
/// both are gone or stale; a worker serving another run does not count.
async fn run_activity_follows_leases_and_heartbeats(db: TestDb) {
    let store = db.store().await;
    let t0 = 1_000_000;
    let run = run_with_items(&*store, "s", 2, t0).await;
    assert_eq!(activity(&*store, run, t0).await, Some(RunActivity::Queued));

    let (_, held) = claim(&*store, "s", 1, t0, 5_000).await;
    assert_eq!(held.len(), 1);
    assert_eq!(
        activity(&*store, run, t0 + 1).await,
        Some(RunActivity::Running)
    );
    // The lease ran out and nobody serves the run.
    assert_eq!(
        activity(&*store, run, t0 + 6_000).await,
        Some(RunActivity::Interrupted)
    );

    let presence = |name: &str, run_id: Option<i64>, until: i64| WorkerPresence {
        name: name.into(),
        host: "h".into(),
        pid: 1,
        run_id,
        started_at: t0,
        last_seen_at: t0,
        alive_until: until,
    };
    store
        .worker_beat(&presence("elsewhere", Some(run + 1000), t0 + 20_000), 0)
        .await
        .unwrap();
    assert_eq!(
        activity(&*store, run, t0 + 6_000).await,
        Some(RunActivity::Interrupted),
        "a worker serving another run does not serve this one"
    );
    store
        .worker_beat(&presence("mine", Some(run), t0 + 10_000), 0)
        .await
        .unwrap();
    assert_eq!(
        activity(&*store, run, t0 + 6_000).await,
        Some(RunActivity::Running)
    );
    assert_eq!(
        activity(&*store, run, t0 + 10_001).await,
        Some(RunActivity::Interrupted),
        "its heartbeat went stale"
    );
    store
        .worker_beat(&presence("all", None, t0 + 30_000), 0)
        .await
        .unwrap();
    assert_eq!(
        activity(&*store, run, t0 + 10_001).await,
        Some(RunActivity::Running),
        "a worker serving every run serves this one"
    );
    store.worker_forget("all").await.unwrap();
    assert_eq!(
        activity(&*store, run, t0 + 10_001).await,
        Some(RunActivity::Interrupted)
    );
    let names: Vec<String> = store
        .worker_list()
        .await
        .unwrap()
        .into_iter()
        .map(|w| w.name)
        .collect();
    assert_eq!(names, ["elsewhere", "mine"]);
    // A beat prunes rows stale since before its cut-off.
    store
        .worker_beat(&presence("mine", Some(run), t0 + 40_000), t0 + 25_000)
        .await
        .unwrap();
    let names: Vec<String> = store
        .worker_list()
        .await
        .unwrap()
        .into_iter()
        .map(|w| w.name)
        .collect();
    assert_eq!(names, ["mine"]);
    // Finished runs have no activity.
    store.run_cancel(run, t0 + 50_000).await.unwrap();
    assert_eq!(activity(&*store, run, t0 + 50_000).await, None);
}

/// The child worker process: serves the run named by the parent with `Long` until killed.
#[test]
fn child_worker() {
    let Ok(url) = std::env::var("IDEMPIPE_LIFECYCLE_CHILD_URL") else {
        return;
    };
    let run: i64 = std::env::var("IDEMPIPE_LIFECYCLE_CHILD_RUN")
        .unwrap()
        .parse()
        .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let store = idempipe_engine::connect(&url).await.unwrap();
        let worker = Worker::new(
            store,
            config(&format!("child-{}", std::process::id()), Some(run)),
        )
        .handler(
            StagePolicy::new("long").lease(Duration::from_millis(900)),
            Long(Arc::default()),
        );
        worker.run(std::future::pending()).await.unwrap();
    });
}

/// Kills (SIGKILL) on drop, so a failing test leaves no worker behind.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A real worker process serving the run makes it `running` and is listed with its pid;
/// after SIGKILL its row and its lease go stale (short heartbeat and lease, no long
/// sleep) and the run reads `interrupted`.
async fn killed_worker_process_leaves_its_run_interrupted(db: TestDb) {
    let store = db.store().await;
    let run = run_with_items(&*store, "long", 1, SystemClock.now()).await;
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["child_worker", "--exact", "--nocapture", "--test-threads=1"])
        .env("IDEMPIPE_LIFECYCLE_CHILD_URL", &db.url)
        .env("IDEMPIPE_LIFECYCLE_CHILD_RUN", run.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let pid = i64::from(child.id());
    let mut child = Killed(child);
    // Its row is alive past its spawn (not checked against the clock at the assertion:
    // on a loaded machine a beat can come a little late).
    let spawned_at = SystemClock.now();
    eventually(Duration::from_secs(30), "the child holds the item", || {
        let store = store.clone();
        async move { count(&*store, run, "running").await == 1 }
    })
    .await;
    assert_eq!(
        activity(&*store, run, SystemClock.now()).await,
        Some(RunActivity::Running)
    );
    let workers = store.worker_list().await.unwrap();
    assert!(
        workers
            .iter()
            .any(|w| w.pid == pid && w.run_id == Some(run) && w.alive_until > spawned_at),
        "{workers:?}"
    );
    child.0.kill().unwrap(); // SIGKILL: no clean stop, the row stays
    child.0.wait().unwrap();
    assert!(
        store
            .worker_list()
            .await
            .unwrap()
            .iter()
            .any(|w| w.pid == pid),
        "a killed worker cannot delete its row"
    );
    eventually(
        Duration::from_secs(10),
        "the run reads interrupted once heartbeat and lease are stale",
        || {
            let store = store.clone();
            async move {
                activity(&*store, run, SystemClock.now()).await == Some(RunActivity::Interrupted)
            }
        },
    )
    .await;
}

/// Shutdown stops a long call at once and gives its item back: no failed attempt, no
/// attempt used. A call that started an outside call finishes within the grace period and
/// its completion is recorded. A clean stop deletes the worker's liveness row.
async fn shutdown_gives_interrupted_attempts_back(db: TestDb) {
    let store = db.store().await;
    let now = SystemClock.now();
    let long_run = run_with_items(&*store, "long", 2, now).await;
    let ext_run = run_with_items(&*store, "external", 1, now).await;
    let calls = Arc::new(AtomicU64::new(0));
    let marked = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (stop, stopped) = stopper();
    let worker = Worker::new(store.clone(), config("stopper", None))
        .handler(StagePolicy::new("long"), Long(calls.clone()))
        .handler(StagePolicy::new("external"), External(marked.clone()));
    let handle = tokio::spawn(worker.run(stopped));
    eventually(Duration::from_secs(30), "both long items running", || {
        let store = store.clone();
        async move { count(&*store, long_run, "running").await == 2 }
    })
    .await;
    eventually(Duration::from_secs(30), "the outside call started", || {
        let marked = marked.clone();
        async move { marked.load(Ordering::SeqCst) }
    })
    .await;
    assert!(
        store
            .worker_list()
            .await
            .unwrap()
            .iter()
            .any(|w| w.name == "stopper"),
        "a running worker has a liveness row"
    );
    stop.send(true).unwrap();
    // The grace period is 60 s and the long calls would sleep 600 s: only stopping them at
    // once gets the worker out within this bound.
    tokio::time::timeout(Duration::from_secs(20), handle)
        .await
        .expect("shutdown must not wait for the long calls")
        .unwrap()
        .unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let items = store
        .item_list(&ItemFilter {
            run_id: long_run,
            ..Default::default()
        })
        .await
        .unwrap();
    for item in &items {
        assert_eq!(item.status, ItemStatus::Pending, "{item:?}");
        assert_eq!(
            item.attempts, 0,
            "the interrupted attempt is not used: {item:?}"
        );
        assert!(item.last_error.is_none(), "{item:?}");
        assert!(
            store.attempt_list(item.id).await.unwrap().is_empty(),
            "no attempt is recorded for an interrupted call"
        );
    }
    let ext = store
        .item_get(ext_run, "external", "item/00000")
        .await
        .unwrap();
    assert_eq!(ext.status, ItemStatus::Completed, "{ext:?}");
    assert!(
        !store
            .worker_list()
            .await
            .unwrap()
            .iter()
            .any(|w| w.name == "stopper"),
        "a clean stop deletes the liveness row"
    );
    assert_eq!(
        activity(&*store, long_run, SystemClock.now()).await,
        Some(RunActivity::Interrupted)
    );
}

backend_tests!(
    worker_for_one_run_never_claims_another,
    run_activity_follows_leases_and_heartbeats,
    killed_worker_process_leaves_its_run_interrupted,
    shutdown_gives_interrupted_attempts_back,
);
